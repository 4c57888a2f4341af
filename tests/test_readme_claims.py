"""README's results come from the committed report: every number it states there, the report contains."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: A measured number as the report writes it: a percentage, or a number with a decimal point or exponent.
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?(?![\w])")


def _results_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## What the measurements say")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _measured_numbers(text: str) -> set[str]:
    # Leave out markdown links and image paths, and small integers (counts of seeds, epochs, layers).
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"`[^`]*`", "", text)
    return {number for number in NUMBER.findall(text) if "." in number or "e" in number or number.endswith("%")}


def test_every_number_in_the_readme_results_is_in_the_committed_report():
    report = (REPO / "figures" / "findings.md").read_text() + (REPO / "figures" / "findings_appendix.md").read_text()
    numbers = _measured_numbers(_results_section())
    assert numbers, "the results section states no measured number"
    missing = sorted(number for number in numbers if number not in report)
    assert not missing, f"README states numbers the report does not contain: {missing}"


def test_the_check_finds_a_number_that_is_not_in_the_report():
    assert _measured_numbers("accuracy 54.1% and ratio 1.6e-08 at T = 32 over 10 seeds") == {"54.1%", "1.6e-08"}
