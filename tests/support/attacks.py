"""Inputs the issue's attacks used, shared by the tiers that replay them."""

#: The YAML alias bomb of issue 14.4: 9 levels of 9-fold aliases, ~10^9 elements once serialised.
_NAMES = "abcdefghi"
BOMB = "[" + ", ".join(["&a [" + ",".join("x" * 9) + "]"] + [
    f"&{_NAMES[i]} [" + ",".join([f"*{_NAMES[i - 1]}"] * 9) + "]" for i in range(1, 9)]) + "]"
