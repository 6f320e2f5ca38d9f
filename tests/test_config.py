"""Every config choice composes and instantiates; bad values fail early with one clear line."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from idspam import tasks
from idspam.backbone import load_config
from idspam.errors import UserError
from idspam.runner.checks import validate
from idspam.runner.compose import check_group_choices, choices, groups

from .conftest import GLUE_DIR, HAVE_DATA
from .zygote import run_module

GROUPS = groups()


def test_config_groups_are_the_documented_ones():
    assert set(GROUPS) >= {"task", "model", "method", "optimizer", "trainer", "logger", "experiment", "head"}


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in choices(g)])
def test_every_choice_composes_and_instantiates(compose_cfg, group, choice, tmp_path):
    overrides = [f"{group}={choice}"]
    if group != "model":
        overrides.append("model=tiny")
    elif choice.startswith(("roberta", "gpt2")):
        overrides.append("model.pretrained=false")  # built from the shipped architecture: no download
    elif choice == "hf":
        overrides += ["model.name_or_path=packaged:all-MiniLM-L6-v2", "model.num_layers=6"]
    # the folder that holds glue_data/, superglue/ and imdb/ (found below it); without the data (a fresh clone)
    # the hub, whose files are not checked before a run
    data = f"data_dir={GLUE_DIR.parent}" if HAVE_DATA else "data_dir=null"
    if group in ("experiment", "task"):
        overrides.append(data)
    if group == "task" and choice == "csv":
        demo = Path(tasks.__file__).parent / "resources"
        overrides += [f"task.train_file={demo / 'demo_sentiment_train.csv'}",
                      f"task.validation_file={demo / 'demo_sentiment_dev.csv'}"]
    if group == "task" and choice == "csv_text":
        (tmp_path / "text.jsonl").write_text('{"input": "say hi", "target": "hi"}\n')
        overrides += [f"task.train_file={tmp_path / 'text.jsonl'}", f"task.validation_file={tmp_path / 'text.jsonl'}",
                      "head=generate", "model=tiny_gpt2"]
    if group == "head" and choice in ("mlm", "lm", "generate"):
        overrides.append("task=sst2")
        if choice in ("lm", "generate"):
            overrides.append("model=tiny_gpt2")
        overrides.append(f"data_dir={GLUE_DIR}" if HAVE_DATA else "data_dir=null")
    cfg = compose_cfg(*overrides)
    try:
        run = validate(cfg)
    except UserError as e:  # only acceptable reason: a file this copy of the data lacks (IMDB: no train split)
        assert "missing data file" in str(e) and group == "task" and choice in ("mnli", "qqp", "qnli", "imdb"), e
        return
    assert load_config(run.model).num_hidden_layers == run.model.num_layers
    assert 0 <= run.layer < run.model.num_layers
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        return  # composes; a Trainer on a GPU needs one
    trainer = instantiate(cfg.trainer, logger=[instantiate(c) for c in (cfg.logger or {}).values() if c] or False)
    assert trainer.max_epochs >= 1


def test_layer_defaults_to_the_middle_of_each_model(compose_cfg):
    for model, middle in {"minilm": 3, "roberta_base": 6, "roberta_large": 12, "tiny": 2}.items():
        assert compose_cfg(f"model={model}").layer == middle


@pytest.mark.parametrize("overrides,message", [
    (["layer=6"], "layer=6 is out of range for model 'minilm' with 6 layers; valid: 0..5"),
    (["model=roberta_large", "layer=24"], "valid: 0..23"),
    (["layer=-1"], "layer=-1 is out of range"),
    (["method.prompt_length=0"], "method.prompt_length=0 must be at least 1"),
    (["task.name=boolq_typo"], "unknown task 'boolq_typo'; valid: rte, mrpc, sst2"),
    (["task=rte", "data_dir=/no/such/dir"], "data_dir='/no/such/dir' is not a folder"),
    (["optimizer.scheduler=step"], "unknown optimizer.scheduler 'step'; valid: linear, cosine, constant"),
    (["method.embedding_source=pos"], "unknown method.embedding_source 'pos'; valid: word, full"),
    (["task=stsb", "head=mlm"], "regression task"),
    (["method.num_heads=0"], "method.num_heads=0 must be at least 1"),
    (["task=mnli", "task.metric=f1"], "unknown task.metric for task 'mnli': 'f1'; valid: accuracy, macro_f1"),
])
def test_bad_values_are_named_with_the_valid_ones(compose_cfg, overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_cfg(*overrides))


def test_missing_data_file_names_the_file_and_what_is_there(compose_cfg, tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(UserError, match=r"missing data file '.*RTE/dev.tsv' for task 'rte' \(validation\)"
                                        r".*holds \['train.tsv'\]"):
        validate(compose_cfg("task=rte", f"data_dir={tmp_path}"))


def test_unknown_group_choice_names_the_valid_ones():
    with pytest.raises(UserError, match="unknown model 'bert'; valid: gpt2, gpt2_large, gpt2_medium, gpt2_xl, hf, "
                                        "llama_3_1_8b, llama_3_2_1b, llama_small, minilm, qwen2_5_0_5b, roberta_base"):
        check_group_choices(["model=bert"])
    with pytest.raises(UserError, match="unknown task 'foo'; valid: boolq, cb, cola, copa, csv, csv_text, demo, imdb"):
        check_group_choices(["-m", "task=rte,foo"])
    with pytest.raises(UserError, match="unknown task 'mrcp'; valid: boolq"):
        check_group_choices(["task@source_task=mrcp"])
    with pytest.raises(UserError, match="unknown experiment 'glue'; valid: ablation_meanpool, cpu_layer_sweep"):
        check_group_choices(["-m", "experiment=glue"])
    with pytest.raises(UserError, match="unknown transfer 'sst2_rte'; valid: fewshot_mrpc_qqp"):
        check_group_choices(["transfer=sst2_rte"])
    with pytest.raises(UserError, match="unknown hparams_search 'idspam'; valid: dept_optuna"):
        check_group_choices(["hparams_search=idspam"])
    check_group_choices(["task=rte", "layer=1,2", "model.name_or_path=/x=y", "transfer=sst2_imdb"])  # fine


@pytest.mark.parametrize("args,message", [
    (["task=nosuch"], "error: unknown task 'nosuch'; valid:"),
    (["layer=99"], "error: layer=99 is out of range for model 'minilm' with 6 layers; valid: 0..5"),
    (["task=rte", "data_dir=/no/such/dir"], "error: data_dir='/no/such/dir' is not a folder"),
])
def test_cli_errors_are_one_line_and_exit_nonzero(args, message, tmp_path):
    proc = run_module("idspam.run", *args, f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert proc.stderr.startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cfg_job_prints_the_composed_config():
    proc = run_module("idspam.run", "--cfg", "job", "model=roberta_large", timeout=120)
    assert proc.returncode == 0
    assert "name_or_path: FacebookAI/roberta-large" in proc.stdout and "prompt_length: 10" in proc.stdout
    assert "betas:\n  - 0.9\n  - 0.98" in proc.stdout and "eps: 1.0e-06" in proc.stdout


def test_unreachable_hub_fails_fast_with_how_to_work_offline(monkeypatch, compose_cfg):
    import time

    from idspam.runner.train import train

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the probe fails at once
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"cannot load model config 'idspam-tests/no-such-model': it is not in the "
                                        r"local cache and the hub \(http://127.0.0.1:9\) cannot be reached.*"
                                        r"model.name_or_path=/path/to/folder"):
        train(compose_cfg("task=rte", "model=roberta_large", "model.name_or_path=idspam-tests/no-such-model"))
    assert time.perf_counter() - started < 15


def test_unreachable_hub_data_points_to_data_dir(compose_cfg, monkeypatch):
    from idspam.runner.train import train

    monkeypatch.setattr("idspam.tasks.offline_mode", lambda: False)  # online, so no cache-only attempt
    monkeypatch.setattr("idspam.hub.offline_mode", lambda: False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserError, match=r"data set 'nyu-mll/glue' \(rte, train\).*cannot be reached.*"
                                        r"data_dir=/path/to/glue_data \(this task reads RTE/train.tsv, RTE/dev.tsv\)"):
        train(compose_cfg("task=rte", "model=tiny"))


def test_random_weights_need_no_download(compose_cfg):
    """model.pretrained=false builds any model from its architecture offline; its tokenizer falls back to
    the packaged one only then."""
    from idspam.backbone import load_tokenizer

    run = validate(compose_cfg("model=roberta_large", "model.pretrained=false"))
    config = load_config(run.model)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (1024, 24, 50265)
    assert load_tokenizer(run.model, config)("hello world")["input_ids"]
    pretrained = validate(compose_cfg("model=roberta_large"))
    with pytest.raises(UserError, match="cannot load tokenizer 'FacebookAI/roberta-large'"):
        load_tokenizer(pretrained.model, config)


def test_missing_local_model_folder_is_named(compose_cfg):
    run = validate(compose_cfg("model.name_or_path=/no/such/model"))
    with pytest.raises(UserError, match="model folder '/no/such/model' does not exist"):
        load_config(run.model)
