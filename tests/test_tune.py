"""``python -m finetune tune``: resumable SQLite studies, pruning, and a config the methods accept."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import soundfile as sf

from finetune import probe as fp
from finetune import tune
from finetune.cv import make_folds, method_options
from ser.corpora import load_corpus
from tests.tiny_models import save_tiny_wav2vec2

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"neutral": 140.0, "happy": 420.0, "sad": 900.0}
SPEAKERS = ["s1", "s2", "s3", "s4"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder corpus of tones whose pitch depends on the class: root/<label>/<speaker>_<n>.wav."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for label, freq in CLASSES.items():
        (root / label).mkdir()
        for number, speaker in enumerate(SPEAKERS):
            for take in range(2):
                t = np.arange(int(16000 * (0.4 + 0.1 * take))) / 16000
                clip = 0.4 * np.sin(2 * np.pi * freq * (1 + 0.05 * number) * t) + 0.02 * rng.standard_normal(t.size)
                sf.write(root / label / f"{speaker}_{take}.wav", clip.astype(np.float32), 16000)
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2")))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fp._LAST_FEATURES.clear()
    yield
    fp._LAST_FEATURES.clear()


def _cli(corpus_dir: Path, out: Path, backbone: str, cache_dir: str, trials: int) -> int:
    parser = argparse.ArgumentParser()
    tune.add_arguments(parser)
    args = parser.parse_args([
        "--method", "probe", "--corpus", "folder", "--root", str(corpus_dir), "--out", str(out),
        "--folds", "2", "--trials", str(trials), "--pruner", "none", "--threads", "1",
        "--space", "pooling=mean", "--space", "head_hidden_size=0", "--space", "l2=1e-4:1e-1",
        "--", "--model", backbone, "--cache-dir", cache_dir, "--epochs", "50",
    ])
    return tune.run(args)


def test_study_resumes_from_sqlite_and_writes_a_config_the_probe_accepts(corpus_dir, backbone, cache_dir, tmp_path, capsys):
    out = tmp_path / "tune"
    assert _cli(corpus_dir, out, backbone, cache_dir, trials=2) == 0
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    assert len(optuna.load_study(study_name="probe-folder", storage=storage).trials) == 2
    fp._LAST_FEATURES.clear()
    assert _cli(corpus_dir, out, backbone, cache_dir, trials=3) == 0  # a new study object on the same file
    study = optuna.load_study(study_name="probe-folder", storage=storage)
    assert [trial.number for trial in study.trials] == [0, 1, 2]
    assert all(trial.state.name == "COMPLETE" for trial in study.trials)
    assert study.trials[0].params == {"layer_mix": "concat", "l2": 1e-3}  # trial 0: the defaults
    assert study.trials[0].user_attrs["defaults"]

    config = json.loads((out / tune.CONFIG_NAME).read_text())
    assert config["l2"] == study.best_trial.params["l2"] and config["backbone"] == backbone
    assert config["pooling"] == "mean" and config["epochs"] == 50
    assert not {"corpus", "root", "out", "cache_dir"} & set(config)
    flags = json.loads((out / "tune.json").read_text())["flags"]
    assert flags == tune.command_flags("probe", config) and "--layer-mix" in flags
    assert f"--l2 {flags[flags.index('--l2') + 1]}" in capsys.readouterr().out
    # The flags parse, with the probe's own parser, to the same values as the JSON config.
    parsed = method_options("probe", flags)
    for name, value in config.items():
        assert getattr(parsed, name) == value
    # And the JSON's keys are the probe's options: they build ProbeOptions and train a fold.
    options = fp.options_from({**config, "cache_dir": cache_dir})
    assert (options.backbone, options.l2, options.layer_mix) == (backbone, config["l2"], config["layer_mix"])
    dataset = load_corpus("folder", corpus_dir)
    train_idx, test_idx = make_folds(dataset, 2)[0]
    y_true, y_pred = fp.run_fold(dataset, train_idx, test_idx, options)
    assert len(y_pred) == len(test_idx)


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def _stub_folds(corpus_dir: Path, monkeypatch, perfect_mix: str = "concat") -> tuple:
    """The corpus's folds and a stub run_fold: perfect for ``perfect_mix``, always wrong otherwise."""
    dataset = load_corpus("folder", corpus_dir)
    labels = np.asarray(dataset["label"])
    calls: list[str] = []

    def run_fold(dataset, train_idx, test_idx, options):
        calls.append(options.layer_mix)
        y_true = labels[np.asarray(test_idx)]
        return y_true, y_true if options.layer_mix == perfect_mix else (y_true + 1) % len(CLASSES)

    monkeypatch.setattr(fp, "run_fold", run_fold)
    base = method_options("probe", [])
    return dataset, make_folds(dataset, "loso"), base, calls


def test_a_pruner_stops_every_trial_after_its_first_fold(corpus_dir, monkeypatch):
    dataset, folds, base, calls = _stub_folds(corpus_dir, monkeypatch)
    space = tune.override_space("probe", tune.probe_space(), ["pooling=mean", "head_hidden_size=0"])
    study = tune.search(dataset, "probe", folds, base, space, trials=2, storage=None, study_name="s", pruner=AlwaysPrune())
    assert [trial.state.name for trial in study.trials] == ["PRUNED", "PRUNED"]
    assert len(calls) == 2 and len(folds) == 4  # one fold each, of four


def test_the_median_pruner_stops_a_bad_trial_early(corpus_dir, monkeypatch, tmp_path):
    dataset, folds, base, calls = _stub_folds(corpus_dir, monkeypatch)
    space = tune.override_space("probe", tune.probe_space(), ["pooling=mean", "head_hidden_size=0", "l2=0.001"])
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.enqueue_trial({"layer_mix": "concat"})
    study.enqueue_trial({"layer_mix": "weighted"})
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = tune.search(dataset, "probe", folds, base, space, trials=2, storage=storage, study_name="s", pruner=pruner)
    good, bad = study.trials
    assert (good.state.name, good.value, len(good.intermediate_values)) == ("COMPLETE", 1.0, 4)
    assert bad.state.name == "PRUNED" and bad.intermediate_values == {0: 0.0}
    assert calls == ["concat"] * 4 + ["weighted"]
    assert tune.best_options(study, space, base).layer_mix == "concat"


def test_space_overrides_are_narrow_and_typed():
    space = {p.name: p for p in tune.override_space(
        "probe", tune.probe_space(), ["pooling=mean", "head-hidden-size=0,32", "l2=1e-4:1e-2", "adapt=false"]
    )}
    assert space["pooling"].choices == ("mean",) and space["head_hidden_size"].choices == (0, 32)
    assert (space["l2"].low, space["l2"].high, space["l2"].log, space["l2"].when) == (1e-4, 1e-2, True, ("optimizer", "lbfgs"))
    assert space["adapt"].choices == (False,)
    assert space["layer_mix"] == tune.probe_space()[1]  # untouched
    with pytest.raises(ValueError, match="no option 'nonsense'"):
        tune.override_space("probe", tune.probe_space(), ["nonsense=1"])


def test_classical_config_round_trips_through_its_parser():
    config = tune.recipe("classical", argparse.Namespace(
        corpus="c", root="r", out="o", features="mfcc", estimator="tree", cache_dir=None, test_size=0.2, seed=0
    ), tune.classical_space())
    assert config == {"features": "mfcc", "estimator": "tree"}
    parsed = method_options("classical", tune.command_flags("classical", config))
    assert (parsed.features, parsed.estimator) == ("mfcc", "tree")
    flags = tune.command_flags("probe", {"adapt": True, "l2": 0.00012345678})
    assert flags == ["--adapt", "true", "--l2", "0.00012345678"]
    parsed = method_options("probe", flags)
    assert (parsed.adapt, parsed.l2) == (True, 0.00012345678)


def test_inner_folds_stay_inside_the_training_speakers(corpus_dir):
    from finetune.data import speaker_groups

    dataset = load_corpus("folder", corpus_dir)
    groups = speaker_groups(dataset)
    train_idx, test_idx = make_folds(dataset, 2)[0]
    inner = tune.inner_folds(dataset, train_idx, "loso")
    assert len(inner) == len(set(groups[train_idx]))
    for fit, held in inner:
        assert set(fit) | set(held) == set(train_idx) and not set(groups[held]) & set(groups[fit])


def test_classical_options_are_searched_with_its_own_run_fold(corpus_dir, tmp_path):
    dataset = load_corpus("folder", corpus_dir)
    base = method_options("classical", ["--cache-dir", str(tmp_path / "features")])
    space = tune.override_space("classical", tune.classical_space(), ["features=mfcc", "estimator=tree,svm"])
    study = tune.search(dataset, "classical", make_folds(dataset, 2), base, space, trials=2, storage=None, study_name="c")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params == {"estimator": "svm"}  # the default estimator first
    config = tune.recipe("classical", tune.best_options(study, space, base), space)
    assert config["features"] == "mfcc" and config["estimator"] in ("tree", "svm")


def test_tune_is_a_finetune_command():
    from finetune.__main__ import COMMANDS

    assert COMMANDS["tune"][0] == "finetune.tune"


def _benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_tune", REPO / "benchmarks" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_smallest_setting_runs_without_emodb(corpus_dir, backbone, cache_dir, tmp_path):
    out = tmp_path / "tune"
    assert _benchmark().main([
        "--corpus", "folder", "--root", str(corpus_dir), "--backbone", backbone, "--cache-dir", cache_dir,
        "--outer-folds", "2", "--inner-folds", "2", "--trials", "2", "--startup-trials", "1",
        "--space", "pooling=mean", "--space", "head_hidden_size=0", "--out", str(out),
    ]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["outer_folds"]) == 2 and result["meta"]["trials"] == 2
    for row in result["outer_folds"]:
        assert set(row["test_speakers"]) <= set(SPEAKERS)
        assert 0 <= row["tuned_uar"] <= 1 and row["trials"] == 2
    assert "| **mean ± std** |" in out.with_suffix(".md").read_text()


def test_benchmark_skips_without_its_corpus(tmp_path):
    assert _benchmark().main(["--root", str(tmp_path / "missing"), "--out", str(tmp_path / "tune")]) == 0
    assert not (tmp_path / "tune.json").exists()
