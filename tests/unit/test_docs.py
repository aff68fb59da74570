"""The docs agree with the code: every setting documented with its default, every link resolves.

Conventions these tests read (docs/configuration.md states them for readers):

- A configuration table row is ``| `key` | default | ... |``. The default cell
  starts with the default as a YAML code span (`` `120` ``, `` `[5, 60]` ``,
  `` `false` ``), or with the word "none" when the key's default is unset
  (``None`` in ``KEYS``).
- ``salt/master.d/callbacks.conf`` sets each key to its default, or holds it
  commented out as ``#key: default`` (nested keys keep their indentation after
  the ``#``), so removing the ``#`` gives the same YAML with the key set.
"""

import re
from pathlib import Path

import pytest
import yaml

from salt_callbacks import config
from salt_callbacks.api import config as apiconfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
EXAMPLE_CONF = ROOT / "salt" / "master.d" / "callbacks.conf"
README_LIMIT = 15_000

BLOCKS = {"callbacks": config.KEYS, "callbacks_api": apiconfig.KEYS}

# Each block's table sits under a heading that names the block, in the README
# and in the configuration reference.
TABLE_HEADINGS = {"callbacks": "`callbacks:`", "callbacks_api": "`callbacks_api:`"}


def markdown_files():
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code(text):
    """The text with fenced blocks and inline code spans blanked (links in code are not links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(lines)


def headings(text):
    """Heading texts outside code fences, in order."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match and not fenced:
            found.append(match.group(2))
    return found


def anchors(text):
    """The anchors GitHub gives a page's headings: lowercased, punctuation dropped, spaces to hyphens."""
    seen, result = {}, set()
    for heading in headings(text):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(text):
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", without_code(text))


def section(text, heading):
    """The lines under the first heading that is exactly ``heading``, up to the next heading."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match and match.group(1) == heading:
            body = []
            for following in lines[index + 1:]:
                if re.match(r"^#{1,6}\s", following):
                    break
                body.append(following)
            return body
    raise AssertionError(f"no heading {heading!r}")


def table_defaults(text, block):
    """``{key: default cell}`` from the table under the block's heading."""
    rows = {}
    for line in section(text, TABLE_HEADINGS[block]):
        match = re.match(r"^\|\s*`([a-z_]+)`\s*\|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def same(value, default):
    # 10 and 10.0, or 1 and True, are different defaults to a reader of YAML.
    if isinstance(default, (list, tuple)):
        return isinstance(value, list) and len(value) == len(default) and all(map(same, value, default))
    return type(value) is type(default) and value == default


def documented_default_problem(cell, default):
    if default is None:
        return None if cell.lower().startswith("none") else f"should start with 'none', got {cell!r}"
    match = re.match(r"^`([^`]+)`", cell)
    if not match:
        return f"should start with the default as a code span, got {cell!r}"
    value = yaml.safe_load(match.group(1))
    return None if same(value, default) else f"says {value!r}, the code says {default!r}"


def uncommented(conf_text):
    """The example config with every commented-out setting (``#key: value``) set."""
    names = {"callbacks_api"} | set(config.KEYS) | set(apiconfig.KEYS)

    def restore(match):
        return match.group(1) + match.group(2) if match.group(3) in names else match.group(0)

    return re.sub(r"^(\s*)#(\s*([a-z_]+):)", restore, conf_text, flags=re.M)


# --- every setting, with its default, in the example config and the README ---


@pytest.mark.parametrize("block", sorted(BLOCKS))
@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md"])
def test_every_key_is_in_the_configuration_table_with_the_codes_default(page, block):
    rows = table_defaults((ROOT / page).read_text(encoding="utf-8"), block)
    keys = BLOCKS[block]

    assert sorted(rows) == sorted(keys), f"{page}: the {block}: table and {block} KEYS differ"
    problems = [
        f"{block}:{key} {problem}"
        for key, (default, _meaning) in keys.items()
        if (problem := documented_default_problem(rows[key], default))
    ]
    assert not problems, f"{page}: " + "; ".join(problems)


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_key_is_in_the_example_config_with_its_default(block):
    settings = yaml.safe_load(uncommented(EXAMPLE_CONF.read_text(encoding="utf-8")))[block]

    assert sorted(settings) == sorted(BLOCKS[block])
    wrong = {
        key: (settings[key], default)
        for key, (default, _meaning) in BLOCKS[block].items()
        if not same(settings[key], default)
    }
    assert not wrong, f"{EXAMPLE_CONF.name}: (written, default) differ: {wrong}"


def test_the_example_config_loads_as_it_is_with_the_engine_on_and_the_http_api_off():
    master = yaml.safe_load(EXAMPLE_CONF.read_text(encoding="utf-8"))

    assert {"callbacks": {}} in master["engines"]
    # salt-api starts the HTTP API whenever the block is present: off by default.
    assert "callbacks_api" not in master
    _config, unknown = config.CallbacksConfig.from_mapping(master["callbacks"])
    assert unknown == []


def test_the_uncommented_settings_of_the_example_config_are_the_only_changes():
    # Uncommenting touches setting lines only: the commentary stays commentary.
    text = EXAMPLE_CONF.read_text(encoding="utf-8")
    changed = [
        (before, after)
        for before, after in zip(text.splitlines(), uncommented(text).splitlines())
        if before != after
    ]
    assert changed, "the example config comments out no setting (callbacks_api must be there, off)"
    assert all(re.match(r"^\s*[a-z_]+:", after) for _before, after in changed)


# --- links ---


def page_ids():
    return [str(path.relative_to(ROOT)) for path in markdown_files()]


@pytest.mark.parametrize("page", page_ids())
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    source = ROOT / page
    broken = []
    for link in links(source.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target_part, _, anchor = link.partition("#")
        target = (source.parent / target_part).resolve() if target_part else source
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix != ".md":
            broken.append(f"{link}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page}: " + "; ".join(broken)


def test_the_docs_index_links_every_page():
    linked = {link.partition("#")[0] for link in links((DOCS / "index.md").read_text(encoding="utf-8"))}
    pages = {path.name for path in DOCS.glob("*.md")} - {"index.md"}

    assert sorted(pages - linked) == []


def test_the_link_checker_catches_a_missing_file_and_a_missing_heading():
    text = "# A page\n\n[ok](#a-page) [gone](nowhere.md) [`code`](#no-such-heading)\n```\n[in code](x.md)\n```\n"

    assert links(text) == ["#a-page", "nowhere.md", "#no-such-heading"]
    assert anchors(text) == {"a-page"}
    assert anchors("## `callbacks_api:`\n## The caller's token: checked, then sealed\n## A\n## A\n") == {
        "callbacks_api",
        "the-callers-token-checked-then-sealed",
        "a",
        "a-1",
    }


# --- the README itself ---


def test_the_readme_is_short_and_gives_the_two_commands():
    text = README.read_text(encoding="utf-8")

    assert len(text.encode("utf-8")) < README_LIMIT
    assert "make demo" in text
    assert "make test" in text


@pytest.mark.parametrize("page", page_ids())
def test_prose_names_the_autopi_page_not_our_old_word_for_it(page):
    # "AutoPi's page" was our word for AutoPi's page; readers never met it.
    assert not re.search(r"\bseed\b", (ROOT / page).read_text(encoding="utf-8"), re.I)
