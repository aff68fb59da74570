"""The bench's report: figures beside their targets and ceilings, medians of
repeated runs, and a results page that is exactly what its JSON generates."""

import json

from tests.support.harness import REPO
from tools.bench import report, targets
from tools.bench.stats import median_run


def results(**scenarios):
    return {"config": {"rate": 1000, "hole_share": 0.1, "burst": 15000, "pending": 100000, "repeat": 3},
            "scenarios": scenarios, "code": {"commit": "abc1234"}, "machine": {"cpus": 2}}


def row(rows, start):
    (found,) = [r for r in rows if r[0].startswith(start)]
    return dict(zip(report.HEADER, found))


def test_throughput_is_judged_against_the_lower_ceiling():
    rows, lines = report.build(results(
        ceiling_http={"rate": 5000}, ceiling_bus={"store_job": {"rate": 300}, "event": {"rate": 2000}},
        engine_tput_store_job={"rate": 250}, engine_tput_event={"rate": 1000}))
    store_job, event = row(rows, "webhooks/s sustained, store_job"), row(rows, "webhooks/s sustained, event")
    assert (store_job["engine"], store_job["ceiling"], store_job["verdict"]) == ("250", "300 (bus)", "PASS")
    assert (event["engine"], event["ceiling"], event["verdict"]) == ("1,000", "2,000 (bus)", "FAIL")
    assert "engine / lower ceiling (store_job): 83%  (bus 300/s, http 5,000/s)" in lines


def test_a_figure_not_measured_is_not_judged():
    rows, _ = report.build(results())
    assert {r[-1] for r in rows} <= {"n/a", ""}


def test_the_memory_target_is_judged_only_at_100k_pending():
    small = results(pending={"pending": 2000, "rss_pending_mb": 70.0})
    small["config"]["pending"] = 2000
    assert row(report.build(small)[0], "engine RSS MB with")["verdict"] == "n/a"
    big = results(pending={"pending": 100000, "rss_pending_mb": 160.0})
    assert row(report.build(big)[0], "engine RSS MB with")["verdict"] == "FAIL"


def test_the_median_run_is_the_headline_and_every_run_is_kept():
    runs = [{"rate": 300.0, "cpu": {"engine": 0.9}}, {"rate": 100.0}, {"rate": None}, {"rate": 200.0}]
    median = median_run(runs, lambda r: r.get("rate"))
    assert (median["rate"], median["median_of"], median["runs"]) == (200.0, 4, runs)

    rows, _ = report.build(results(engine_tput_event=median_run(
        [{"rate": 300.0}, {"rate": 100.0}, {"rate": 200.0}], lambda r: r["rate"])))
    event = row(rows, "webhooks/s sustained, event")
    assert (event["engine"], event["engine min–max (runs)"]) == ("200", "100–300 (3)")


def test_the_page_states_the_commit_machine_and_each_figure_with_its_target():
    page = report.page(results(engine_tput_event={"rate": 1000, "cpu": {"engine": 0.7, "wall_s": 3.0}}))
    assert "commit `abc1234`" in page and "2 CPUs" in page
    assert "| webhooks/s sustained, event injection | 1,000 |" in page
    assert ">=80% ceil" in page
    assert "| target (issue 13) | measured | met? |" in page
    assert "| engine_tput_event | 0.70 |" in page  # the CPU split


def test_the_committed_results_page_is_what_its_json_generates():
    data = json.loads((REPO / "docs" / "results.json").read_text(encoding="utf-8"))
    assert (REPO / "docs" / "results.md").read_text(encoding="utf-8") == report.page(data), (
        "docs/results.md differs from what docs/results.json generates: run `make results`")


def target(results_, start):
    (found,) = [r for r in targets.rows(results_) if r[0].startswith(start)]
    return found


def test_added_latency_is_the_engines_p99_over_the_bus_subscribers_at_half_the_bus_ceiling():
    bus = {"event": {"rate": 4000}, "latency": {"latency": {"p99_ms": 2.0}}}
    fast = results(ceiling_bus=bus, engine_latency={"target_rate": 2000, "offered_rate": 1990, "lost": 0,
                                                    "latency": {"p99_ms": 6.5}})
    assert target(fast, "added latency")[1:] == ("4.50 ms (engine p99 6.50 - bus p99 2.00) at 2,000/s", "met")
    slow = results(ceiling_bus=bus, engine_latency={"target_rate": 2000, "offered_rate": 1990, "lost": 0,
                                                    "latency": {"p99_ms": 7.5}})
    assert target(slow, "added latency")[2] == "MISSED"
    elsewhere = results(ceiling_bus=bus, engine_latency={"target_rate": 300, "offered_rate": 300, "lost": 0,
                                                         "latency": {"p99_ms": 2.5}})
    assert target(elsewhere, "added latency")[2] == "n/a"  # not at half the bus ceiling: not judged


def test_cpu_per_webhook_and_the_store_forms_are_judged_against_the_issue():
    run = results(engine_tput_event={"rate": 900, "engine_cpu_us_per_webhook": 310.0},
                  store={"records": 100000, "get": {"median_ms": 1.0}, "list": {"median_ms": 3.0},
                         "list_device": {"median_ms": 2.0}, "list_timeout_10": {"median_ms": 4.0},
                         "list_executed_10_nomatch": {"median_ms": 60.0}})
    assert target(run, "engine CPU per delivered webhook")[1:] == ("310 µs", "MISSED")
    assert target(run, "callbacks.get")[2] == "met"
    assert target(run, "every callbacks.list form")[2] == "MISSED"  # the no-match form is over 50 ms
    assert "engine CPU µs per webhook, event injection" in report.text_table(run)


def test_a_scenario_started_on_a_busy_machine_is_said_in_the_output():
    run = results()
    run["config"].update({"quiet_cores": 0.3, "quiet_wait": 10})
    run["quiet_waits"] = {"engine_tput_event": {"waited_s": 10.0, "background": 1.2},
                          "pending": {"waited_s": 1.0, "background": 0.1}}
    text = report.text_table(run)
    assert "1 of 2 scenario(s) started on a busy machine" in text and "before engine_tput_event" in text
