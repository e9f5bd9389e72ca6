"""Every command line answers a user error with one line on stderr and exit status 2, before any expensive
work (nothing is trained, no pipeline is built); ``--debug`` shows the traceback instead. In-process:
each ``main(argv)`` is the console entry point."""
import json
from dataclasses import replace

import pytest

from cda_lite import _cli
from cda_lite import checkpoint as C
from cda_lite.paths import data_path

ALIGN_FILE = str(data_path("problems", "single_gaussian.json"))
COMPOSE = {"experts": [{"weights": [1], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]},
                       {"weights": [1], "means": [[1, 0]], "covs": [[[1, 0], [0, 1]]]}]}


@pytest.fixture
def files(tmp_path):
    comp = tmp_path / "comp.json"
    comp.write_text(json.dumps(COMPOSE))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return {"comp": str(comp), "bad": str(bad), "unwritable": str(blocker / "out"), "tmp": str(tmp_path)}


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a command gets as far as training or building a pipeline."""
    def boom(*a, **k):
        raise AssertionError("expensive work started before the user error was reported")

    import cda_lite.bench.align2d as A
    import cda_lite.bench.compose2d as CO
    import cda_lite.bench.rivals2d as R
    monkeypatch.setattr(A, "learned_alignment", boom)
    monkeypatch.setattr(CO, "and_experiment", boom)
    monkeypatch.setattr(CO, "or_experiment", boom)
    monkeypatch.setattr(R, "compare", boom)
    try:
        import cda_lite.sd.__main__ as SDM
        monkeypatch.setattr(SDM, "_load_pipe", boom)
    except ImportError:
        pass


def _bench(argv):
    from cda_lite.bench.__main__ import main
    return main(argv)


def _sd(argv):
    pytest.importorskip("diffusers")
    from cda_lite.sd.__main__ import main
    return main(argv)


def _exact(argv):
    from cda_lite.exact import main
    return main(argv)


def _reproduce(argv):
    from cda_lite.bench.reproduce import main
    return main(argv)


def _digits(argv):
    from cda_lite.digits.unet import main
    return main(argv)


CASES = {
    "align2d given a composition file": (_bench, ["align2d", "{comp}"], "composition problem"),
    "align2d negative steps": (_bench, ["align2d", ALIGN_FILE, "--steps", "-5"], "--steps"),
    "align2d zero steps": (_bench, ["align2d", ALIGN_FILE, "--steps", "0"], "--steps"),
    "align2d missing file": (_bench, ["align2d", "{tmp}/missing.json"], "no such file"),
    "align2d invalid JSON": (_bench, ["align2d", "{bad}"], "not valid JSON"),
    "rivals2d given a composition file": (_bench, ["rivals2d", "{comp}"], "composition problem"),
    "rivals2d NaN alpha": (_bench, ["rivals2d", ALIGN_FILE, "--alpha", "nan"], "--alpha"),
    "rivals2d zero particles": (_bench, ["rivals2d", ALIGN_FILE, "--particles", "0"], "--particles"),
    "compose2d given an alignment file": (_bench, ["compose2d", ALIGN_FILE], "alignment problem"),
    "compose2d negative rounds": (_bench, ["compose2d", "{comp}", "--rounds", "-1"], "--rounds"),
    "compose2d unknown dual": (_bench, ["compose2d", "{comp}", "--dual", "sgd"], "invalid choice: 'sgd'"),
    "bench unknown subcommand": (_bench, ["align3d"], "invalid choice"),
    "images zero threads": (_bench, ["images", "--threads", "0"], "--threads"),
    "sd negative steps": (_sd, ["train", "--preset", "fig3", "--tiny", "--out", "{tmp}/o", "--steps", "-3"], "--steps"),
    "sd unknown preset": (_sd, ["train", "--preset", "fig33", "--tiny", "--out", "{tmp}/o"], "invalid choice: 'fig33'"),
    "sd unknown reward": (_sd, ["train", "--preset", "table2", "--tiny", "--reward", "beauty", "--out", "{tmp}/o"],
                          "unknown reward"),
    "sd train given a composition preset": (_sd, ["train", "--preset", "fig5", "--tiny", "--out", "{tmp}/o"],
                                            "invalid choice: 'fig5'"),
    "sd compose given an alignment preset": (_sd, ["compose", "--preset", "fig3", "--tiny", "--out", "{tmp}/o"],
                                             "invalid choice: 'fig3'"),
    "sd unwritable out": (_sd, ["train", "--preset", "fig3", "--tiny", "--out", "{unwritable}"], "--out"),
    "sd missing adapter folder": (_sd, ["compose", "--preset", "fig5", "--tiny", "--adapters", "{tmp}/none",
                                        "--out", "{tmp}/o"], "no such folder"),
    "sd missing weights": (_sd, ["train", "--preset", "fig3", "--model-path", "{tmp}/sd15", "--out", "{tmp}/o"],
                           "does not exist"),
    "exact invalid JSON": (_exact, ["{bad}"], "not valid JSON"),
    "exact missing file": (_exact, ["{tmp}/missing.json"], "no such file"),
    "reproduce unknown figure": (_reproduce, ["fig9"], "invalid choice"),
    "reproduce unwritable out": (_reproduce, ["fig1", "--out", "{unwritable}"], "--out"),
    "digits zero steps": (_digits, ["--train", "--steps", "0"], "--steps"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_and_exit_2(case, files, no_work, capsys):
    fn, argv, needle = CASES[case]
    argv = [a.format(**files) for a in argv]
    try:
        rc = fn(argv)
    except SystemExit as e:  # argparse usage errors exit from inside main
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, (case, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0] and "Traceback" not in err


def test_debug_shows_the_traceback(files):
    with pytest.raises(ValueError, match="not valid JSON"):
        _exact([files["bad"], "--debug"])


def test_sd_resume_under_another_configuration_is_refused_before_the_pipeline(files, no_work, capsys):
    pytest.importorskip("diffusers")
    from cda_lite.sd import presets as P
    from cda_lite.sd.train import run_identity
    out = files["tmp"] + "/run"
    p = replace(P.get_preset("fig3", tiny=True), seed=0)
    C.save_checkpoint({"step": 1}, out + "/checkpoint.pt", config=run_identity(p, "tiny"))
    for extra, fields in ((["--seed", "1"], "preset.seed"), (["--baseline"], "preset.fixed_weights"),
                          (["--preset", "table2"], "preset.constraints")):
        argv = ["train", "--preset", "fig3", "--tiny", "--out", out] + extra
        if "--preset" in extra:
            argv = ["train", "--tiny", "--out", out] + extra
        assert _sd(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fields in err and "--fresh" in err, err
    # the same configuration, --fresh and --force-resume all get past the check (to the pipeline)
    for extra in ([], ["--seed", "1", "--fresh"], ["--seed", "1", "--force-resume"]):
        with pytest.raises(AssertionError, match="expensive work started"):
            _sd(["train", "--preset", "fig3", "--tiny", "--out", out] + extra)


def test_counts_and_numbers_parse():
    assert _cli.count("3") == 3
    for bad in ("0", "-3", "2.5", "x"):
        with pytest.raises(Exception):
            _cli.count(bad)
    for bad in ("nan", "inf", "x"):
        with pytest.raises(Exception):
            _cli.finite_float(bad)
    with pytest.raises(Exception):
        _cli.positive_float("0")


def test_sd_corrupt_checkpoint_is_one_line_before_the_pipeline(files, no_work, capsys):
    pytest.importorskip("diffusers")
    import os
    out = os.path.join(files["tmp"], "run")
    os.makedirs(out)
    with open(os.path.join(out, "checkpoint.pt"), "wb") as f:
        f.write(C.MAGIC + b'{"bytes": 10, "sha256": "00", "step": 1, "config": null}\n' + b"0123")
    assert _sd(["train", "--preset", "fig3", "--tiny", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint.pt is truncated" in err, err
