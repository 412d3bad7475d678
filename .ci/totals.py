"""Add up what the CI stages counted, from the run's log: pytest's closing lines, schemathesis'
test cases and newman's assertions. Prints one line per source and the total last, as
``CI: N passed, N failed, N skipped``.

Usage: python .ci/totals.py LOG
"""

import re
import sys

PYTEST = re.compile(r"^=*\s*(\d+ (?:passed|failed|error|errors|skipped)\b.*?) in [\d.]+s\b")
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped)\b")
SCHEMATHESIS = re.compile(r"^\s+\d+ generated, (.*)$")
NEWMAN = re.compile(r"^│\s+assertions\s+│\s+(\d+)\s+│\s+(\d+)\s+│")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def counts(text: str) -> dict[str, int]:
    found = {"passed": 0, "failed": 0, "skipped": 0}
    for number, word in COUNT.findall(text):
        found["failed" if word.startswith("error") else word] += int(number)
    return found


def main(path: str) -> int:
    sources: list[tuple[str, dict[str, int]]] = []
    with open(path, encoding="utf-8", errors="replace") as log:
        for raw in log:
            line = ANSI.sub("", raw.rstrip("\n"))
            if match := PYTEST.match(line):
                sources.append(("pytest", counts(match.group(1))))
            elif match := SCHEMATHESIS.match(line):
                sources.append(("schemathesis", counts(match.group(1))))
            elif match := NEWMAN.match(line):
                executed, failed = int(match.group(1)), int(match.group(2))
                sources.append(
                    ("newman assertions", {"passed": executed - failed, "failed": failed})
                )
    total = {"passed": 0, "failed": 0, "skipped": 0}
    for name, found in sources:
        print(f"  {name}: " + ", ".join(f"{n} {word}" for word, n in found.items()))
        for word, n in found.items():
            total[word] += n
    print(f"CI: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 0 if sources and total["passed"] and not total["failed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
