"""Add up what the CI steps counted, from their logs: pytest's closing lines, schemathesis'
test cases and newman's assertions. Prints one line per source, then the total, the last
line in pytest's own closing form (``==== N passed, N skipped in S s ====``, with the
failures first when there are any) so that whatever reads CI's output as a test run reads
the whole of it.

Usage: python .ci/totals.py [--seconds S] LOG [LOG ...]
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


def main(paths: list[str], seconds: float) -> int:
    sources: list[tuple[str, dict[str, int]]] = []
    for path in paths:
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
    print(
        f"CI: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped "
        f"(pytest tests, schemathesis cases and newman assertions of every step)"
    )
    parts = [f"{total[word]} {word}" for word in ("failed", "passed", "skipped") if total[word]]
    print(f"{'=' * 30} {', '.join(parts) or 'no tests ran'} in {seconds:.2f}s {'=' * 30}")
    return 0 if sources and total["passed"] and not total["failed"] else 1


if __name__ == "__main__":
    arguments = sys.argv[1:]
    seconds = 0.0
    if arguments[:1] == ["--seconds"]:
        seconds, arguments = float(arguments[1]), arguments[2:]
    sys.exit(main(arguments, seconds))
