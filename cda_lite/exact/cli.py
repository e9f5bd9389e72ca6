"""``python -m cda_lite.exact PROBLEM.json``: the exact answer to a 2-D problem file as one line of JSON
(infeasible constraints: a JSON error object and exit 2). Appendix "Problem files"."""
from __future__ import annotations

import json

from cda_lite.errors import InfeasibleConstraintError
from cda_lite.exact.alignment import align_dual
from cda_lite.exact.mixture import mixture_dual
from cda_lite.exact.problems import AlignmentProblem, load_problem
from cda_lite.exact.product import product_dual

__all__ = ["solve_problem", "main"]


def solve_problem(problem) -> dict:
    """The exact answer to a problem file as a JSON-able dict (see :mod:`cda_lite.exact.problems`)."""
    if isinstance(problem, AlignmentProblem):
        return align_dual(problem.base, problem.rewards, problem.thresholds).to_json()
    and_res = product_dual(problem.experts)
    or_res = mixture_dual(problem.experts) if problem.experts[0].dim == 2 else None
    return {"lam_and": and_res.lam.tolist(), "kls_and": and_res.kls.tolist(),
            "lam_or": None if or_res is None else or_res.lam.tolist()}


def main(argv=None) -> int:
    """``python -m cda_lite.exact FILE``: one JSON line; an infeasible problem prints an ``error`` object
    and exits 2; a bad file is one line on stderr and exit 2 (:mod:`cda_lite._cli`)."""
    from cda_lite._cli import Parser, entry_point, existing_file

    @entry_point("python -m cda_lite.exact")
    def _main(argv):
        p = Parser(prog="python -m cda_lite.exact", description="Print the exact solution of a 2-D problem file as JSON.")
        p.add_argument("problem", type=existing_file, help="path to a problem JSON file")
        args = p.parse_args(argv)
        try:
            out = solve_problem(load_problem(args.problem))
        except InfeasibleConstraintError as e:
            print(json.dumps({"error": "infeasible", "message": str(e), "constraints": e.constraints}))
            return 2
        print(json.dumps(out))
        return 0

    return _main(argv)
