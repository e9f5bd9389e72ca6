"""Mutation score per module from ``mutmut results --all true`` (read on stdin).

Usage: ``mutmut results --all true | python tools/mutation_score.py [--equivalent FILE] [--survivors]``

A mutant counts as *killed* when a test failed or timed out under it. The score is
killed / (killed + survived) over the mutants that ran, leaving out those judged equivalent (no test
can tell them from the original: ``FILE`` lists their names, one per line, ``#`` starts a comment;
default ``benchmarks/mutation_equivalent.txt``). Mutants that no selected test executes ("no tests")
and those not run are counted apart. ``--survivors`` also lists the non-equivalent survivors.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(\S+?)__mutmut_\d+: (.+?)\s*$")
KILLED = {"killed", "timeout"}


def module_of(name: str) -> str:
    """cda_lite.constraints.xǁDualAscentǁupdate → cda_lite.constraints (the part before ``.x_``/``.xǁ``)."""
    return re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]


def read_equivalent(path: Path) -> set[str]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text(encoding="utf8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--equivalent", default="benchmarks/mutation_equivalent.txt")
    ap.add_argument("--survivors", action="store_true")
    args = ap.parse_args(argv)
    equivalent = read_equivalent(Path(args.equivalent))
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for raw in sys.stdin:
        m = LINE.match(raw)
        if not m:
            continue
        full = raw.strip().rsplit(":", 1)[0]
        status = m.group(2)
        mod = module_of(m.group(1))
        if full in equivalent and status == "survived":
            status = "equivalent"
        counts[mod][status] += 1
        if status == "survived":
            survivors.append(full)
    cols = ("killed", "timeout", "survived", "equivalent", "no tests", "not checked")
    print(f"| module | {' | '.join(cols)} | score |")
    print("|---" * (len(cols) + 2) + "|")
    total = Counter()
    for mod in sorted(counts):
        c = counts[mod]
        total.update(c)
        print(f"| {mod} | " + " | ".join(str(c[k]) for k in cols) + f" | {_score(c)} |")
    print("| **all** | " + " | ".join(str(total[k]) for k in cols) + f" | **{_score(total)}** |")
    if args.survivors:
        print("\nsurvivors (not judged equivalent):")
        for s in survivors:
            print("  " + s)
    return 0


def _score(c: Counter) -> str:
    ran = sum(c[k] for k in KILLED) + c["survived"]
    return f"{100 * sum(c[k] for k in KILLED) / ran:.1f} %" if ran else "—"


if __name__ == "__main__":
    raise SystemExit(main())
