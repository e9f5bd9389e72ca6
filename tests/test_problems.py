"""Problem files: the issue's example loads; every malformed file gives a ValueError naming the key."""
import copy
import json

import numpy as np
import pytest

from cda_lite import exact as E
from cda_lite.exact.problems import AlignmentProblem, CompositionProblem, load_problem, save_problem

ISSUE_EXAMPLE = {
    "base": {"weights": [0.5, 0.5], "means": [[0, 0], [2, 0]], "covs": [[[1, 0], [0, 1]], [[0.5, 0], [0, 0.5]]]},
    "rewards": [{"type": "linear", "w": [1, 0]}, {"type": "quadratic", "A": [[1, 0], [0, 1]], "c": [0, 1]}],
    "thresholds": [0.5, -2.0],
    "seed": 0,
}
COMPOSITION = {
    "experts": [
        {"weights": [1.0], "means": [[0.75, 0.0]], "covs": [[[0.025, 0], [0, 0.025]]]},
        {"weights": [0.5, 0.5], "means": [[-0.75, 0.75], [-0.75, -0.75]],
         "covs": [[[0.025, 0], [0, 0.025]], [[0.025, 0], [0, 0.025]]]},
    ],
    "seed": 3,
    "name": "fig2",
}


def _check_issue_problem(p):
    assert isinstance(p, AlignmentProblem)
    np.testing.assert_array_equal(p.base.weights, [0.5, 0.5])
    np.testing.assert_array_equal(p.base.means, [[0, 0], [2, 0]])
    np.testing.assert_array_equal(p.base.covs[1], 0.5 * np.eye(2))
    np.testing.assert_array_equal(p.thresholds, [0.5, -2.0])
    assert p.seed == 0
    x = np.array([[0.3, -1.2], [2.0, 1.0]])
    np.testing.assert_allclose(p.rewards[0](x), x[:, 0])
    np.testing.assert_allclose(p.rewards[1](x), -(x[:, 0] ** 2 + (x[:, 1] - 1) ** 2))


def test_issue_example_from_dict_string_and_file(tmp_path):
    _check_issue_problem(load_problem(ISSUE_EXAMPLE))
    _check_issue_problem(load_problem(json.dumps(ISSUE_EXAMPLE)))
    path = tmp_path / "align.json"
    path.write_text(json.dumps(ISSUE_EXAMPLE))
    p = load_problem(str(path))
    _check_issue_problem(p)
    assert p.name == "align"


def test_composition_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(COMPOSITION))
    p = load_problem(path)
    assert isinstance(p, CompositionProblem)
    assert len(p.experts) == 2 and p.seed == 3 and p.name == "fig2"
    np.testing.assert_array_equal(p.experts[1].means, [[-0.75, 0.75], [-0.75, -0.75]])


def test_save_and_reload_round_trip(tmp_path):
    for d in (ISSUE_EXAMPLE, COMPOSITION):
        p = load_problem(d)
        save_problem(p, tmp_path / "p.json")
        q = load_problem(tmp_path / "p.json")
        assert type(q) is type(p)
        assert json.loads(json.dumps(q.to_dict())) == json.loads(json.dumps(p.to_dict()))


def _mutated(path, value=None, delete=False, src=ISSUE_EXAMPLE):
    d = copy.deepcopy(src)
    *head, last = path
    node = d
    for k in head:
        node = node[k]
    if delete:
        del node[last]
    else:
        node[last] = value
    return d


BAD = [
    (_mutated(["colour"], "red"), "colour"),  # unknown top-level key
    (_mutated(["base", "mean"], [0, 0]), "mean"),  # unknown key inside base
    (_mutated(["rewards", 0, "bias"], 1.0), "bias"),  # unknown key inside a reward
    (_mutated(["colour"], "red", src=COMPOSITION), "colour"),
    (_mutated(["thresholds"], delete=True), "thresholds"),
    (_mutated(["base"], delete=True), "base"),
    (_mutated(["rewards"], delete=True), "rewards"),
    (_mutated(["base", "covs"], delete=True), "covs"),
    (_mutated(["rewards", 1, "c"], delete=True), "'c'"),
    (_mutated(["rewards", 0, "type"], "cubic"), "cubic"),
    (_mutated(["base", "weights"], [1.0]), "weights"),  # shape mismatch with means
    (_mutated(["base", "covs"], [[[1, 0], [0, 1]]]), "covs"),
    (_mutated(["rewards", 0, "w"], [1, 0, 0]), r"rewards\[0\]"),
    (_mutated(["rewards", 1, "A"], [[1, 0, 0], [0, 1, 0]]), "A"),
    (_mutated(["thresholds"], [0.5]), "thresholds"),
    (_mutated(["thresholds"], [0.5, "high"]), "thresholds"),
    (_mutated(["seed"], 1.5), "seed"),
    (_mutated(["base", "weights"], [0.7, 0.7]), "weights"),
    (_mutated(["experts"], [COMPOSITION["experts"][0]], src=COMPOSITION), "experts"),
    (_mutated(["experts", 1, "weights"], delete=True, src=COMPOSITION), r"experts\[1\]"),
]


@pytest.mark.parametrize("d,key", BAD)
def test_malformed_problems_name_the_key(d, key):
    with pytest.raises(ValueError, match=key):
        load_problem(d)


def test_missing_file_and_invalid_json(tmp_path):
    with pytest.raises(OSError):
        load_problem(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_problem(bad)


def test_reward_from_dict_requires_type():
    with pytest.raises(ValueError, match="type"):
        E.reward_from_dict({"w": [1, 0]})
