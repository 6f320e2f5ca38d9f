"""Text-to-text tasks and causal-LM training (head=generate): the loss reads target tokens only, the data
reading (task=csv_text, classification tasks read as label words) and its bad inputs, end-to-end runs that
generate, score and write their predictions, and an adapter reload that generates the same text."""

import json
from pathlib import Path

import pytest
import torch

from idspam.errors import UserError

from .conftest import GLUE_DIR, needs_glue

FAST = ["trainer.max_epochs=1", "logger=none", "data.batch_size=8", "head=generate", "head.max_new_tokens=4"]
has_generation = (Path(__file__).resolve().parents[1] / "idspam" / "generation.py").is_file()
needs_generation = pytest.mark.skipif(not has_generation, reason="idspam/generation.py (decoding) not there yet")
WORDS = ["hello", "world", "great", "cat", "dog", "tree", "house", "car"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def text_files(tmp_path: Path, n: int = 24) -> list[str]:
    rows = [{"input": f"say {w}", "target": f"{w} {w}"} for w in WORDS] * (n // len(WORDS))
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", rows[:8])
    return ["task=csv_text", f"task.train_file={train}", f"task.validation_file={dev}"]


def built(compose_cfg, *overrides):
    """(run, spec, tokenizer, model, data) of a composed config, random weights seeded."""
    from idspam.backbone import (
        fit_config_to_tokenizer,
        load_backbone,
        load_config,
        load_tokenizer,
    )
    from idspam.model import build_model
    from idspam.runner.checks import validate
    from idspam.runner.data import TaskDataModule
    from idspam.tasks import get_spec

    run = validate(compose_cfg(*overrides))
    spec = get_spec(run.task)
    config = load_config(run.model)
    tokenizer = load_tokenizer(run.model, config)
    fit_config_to_tokenizer(config, run.model, tokenizer)
    data = TaskDataModule(run, tokenizer, config)
    torch.manual_seed(0)
    model = build_model(run, spec, load_backbone(run.model, config, with_lm_head=True), tokenizer).eval()
    return run, spec, tokenizer, model, data


def lm_loss(model, batch) -> torch.Tensor:
    import torch.nn.functional as F

    from idspam.heads import lm_targets

    return F.cross_entropy(model(batch).float(), lm_targets(batch["labels"]))


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize("model_name,side", [("tiny_gpt2", "right"), ("tiny_gpt2", "left"), ("tiny_llama", "left"),
                                             ("tiny_llama", "right")])
def test_loss_ignores_input_padding_and_prompt_positions(compose_cfg, tmp_path, model_name, side):
    """Noise written into the last layer's output at prompt, input or padding positions leaves the loss as it
    is; at a position that predicts a target token it does not. Pad ids under the mask change nothing; the
    prompt is the input's alone (the target never shapes it)."""
    run, spec, tok, model, data = built(compose_cfg, f"model={model_name}", f"model.padding_side={side}",
                                        "head=generate", *text_files(tmp_path))
    rows = {"text": [("say hello",), ("a much longer input that makes the other row padded",)],
            "target": ["hello there", "ok"], "label": [-1, -1]}
    enc = data.tokenize.encode_rows(rows)
    batch = data.collate([{"input_ids": i, "target_start": s, "reference": r, "labels": -1}
                          for i, s, r in zip(enc["input_ids"], enc["target_start"], enc["reference"], strict=True)])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[mask == 0] == -100).all() and (labels[batch["input_mask"] == 1] == -100).all()
    eos = tok.sep_token_id
    for row, target in zip(labels, rows["target"], strict=True):  # the target's ids and the EOS, nothing else
        assert row[row != -100].tolist() == tok(" " + target, add_special_tokens=False)["input_ids"] + [eos]
    t = model.method.cfg.prompt_length
    base = lm_loss(model, batch)

    def with_noise(columns_of_row) -> torch.Tensor:
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden.clone()
            for r in range(hidden.shape[0]):
                for c in columns_of_row(r):
                    hidden[r, c] += 100 * torch.randn_like(hidden[r, c])
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = model.engine.layers[-1].register_forward_hook(hook)
        try:
            with torch.no_grad():
                return lm_loss(model, batch)
        finally:
            handle.remove()

    L = labels.shape[1]
    predicts_target = (labels[:, 1:] != -100)  # position j predicts token j + 1
    ignored = [[j for j in range(L) if not (j < L - 1 and predicts_target[r, j])] for r in range(2)]
    assert any(mask[r, j] == 0 for r in range(2) for j in ignored[r]), "no padding position in the test batch"
    torch.testing.assert_close(with_noise(lambda r: range(t)), base, atol=0, rtol=0)  # the prompt's positions
    torch.testing.assert_close(with_noise(lambda r: [t + j for j in ignored[r]]), base, atol=0, rtol=0)
    first_target = [int(predicts_target[r].nonzero()[0]) for r in range(2)]
    assert not torch.allclose(with_noise(lambda r: [t + first_target[r]] if r == 0 else []), base)
    # pad ids under the mask
    other = dict(batch, input_ids=batch["input_ids"].masked_fill(mask == 0, 7))
    torch.testing.assert_close(lm_loss(model, other), base, atol=1e-6, rtol=0)
    # the prompt is the input's: a different target leaves it, and it equals the prompt of the input alone
    seen = []
    handle = model.method.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    rows2 = dict(rows, target=["something else entirely", "no"])
    enc2 = data.tokenize.encode_rows(rows2)
    batch2 = data.collate([{"input_ids": i, "target_start": s, "reference": "", "labels": -1}
                           for i, s in zip(enc2["input_ids"], enc2["target_start"], strict=True)])
    with torch.no_grad():
        model(batch)
        model(batch2)
        alone = model.engine.lower(batch["gen_input_ids"], batch["gen_attention_mask"], model.layer)
        model.method(alone)
    handle.remove()
    torch.testing.assert_close(seen[1], seen[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen[2], seen[0], atol=1e-5, rtol=1e-5)


def test_prompt_source_masks_the_target_out_of_the_prompt(compose_cfg, tmp_path):
    """Without input_mask the target would shape the prompt: the test above would see it."""
    from idspam.model import prompt_source

    _, _, _, model, data = built(compose_cfg, "model=tiny_gpt2", "head=generate", *text_files(tmp_path))
    enc = data.tokenize.encode_rows({"text": [("say hello",)], "target": ["hello"], "label": [-1]})
    batch = data.collate([{"input_ids": enc["input_ids"][0], "target_start": enc["target_start"][0],
                           "reference": "", "labels": -1}])
    states = model.lower_states(batch)
    assert prompt_source(states, batch).attention_mask.tolist() == batch["input_mask"].tolist()
    with torch.no_grad():
        assert not torch.allclose(model.method(states), model.method(prompt_source(states, batch)))


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_text_to_text_files_read_with_eos_and_target_cut(compose_cfg, tmp_path, fmt):
    from idspam.tasks import get_spec, load_split

    rows = [("what is one plus one", "two"), ("name a colour", "red or a long answer that is cut here now")]
    path = tmp_path / f"train.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, [{"question": q, "answer": a, "extra": 1} for q, a in rows])
    else:
        sep = "," if fmt == "csv" else "\t"
        path.write_text("\n".join([sep.join(["id", "question", "answer"])]
                                  + [sep.join(["0", q, a]) for q, a in rows]) + "\n")
    overrides = ["task=csv_text", f"task.train_file={path}", f"task.validation_file={path}",
                 "task.input_column=question",
                 "task.target_column=answer", "task.max_target_length=4", "model=tiny_gpt2"]
    run, spec, tok, _, data = built(compose_cfg, *overrides, "head=generate")
    raw = load_split(get_spec(run.task), run.task, "train", None, 0)
    assert raw["text"] == [(q,) for q, _ in rows] and raw["target"] == [a for _, a in rows]
    data.setup()
    train = data.splits["train"]
    for i, (q, a) in enumerate(rows):
        ids, start = train[i]["input_ids"], train[i]["target_start"]
        assert ids[:start] == [tok.cls_token_id] + tok(q, add_special_tokens=False)["input_ids"]  # plain text
        answer = tok(" " + a, add_special_tokens=False)["input_ids"]
        assert ids[start:] == answer[:3] + [tok.sep_token_id]  # cut to 4 tokens, the EOS kept
        assert train[i]["reference"] == tok.decode(answer[:3])


def test_chat_template_wraps_the_input_where_the_tokenizer_has_one(compose_cfg, tmp_path):
    from idspam.text import TextTokenize

    run, _, tok, _, _ = built(compose_cfg, "model=tiny_gpt2", "head=generate", *text_files(tmp_path))
    tok.chat_template = ("{% for m in messages %}[CLS] user : {{ m['content'] }} [SEP]{% endfor %}"
                         "{% if add_generation_prompt %} assistant :{% endif %}")
    try:
        chat = TextTokenize(tok, run.task, tok.sep_token_id)
        ids = chat.encode_input(("hello there",))
        assert tok.decode(ids) == "[CLS] user : hello there [SEP] assistant :"
        run.task.chat_template = False
        plain = TextTokenize(tok, run.task, tok.sep_token_id)
        assert tok.decode(plain.encode_input(("hello there",))) == "[CLS] hello there"
    finally:
        tok.chat_template = None


@pytest.mark.parametrize("rows,message", [
    ([{"input": "a", "target": "b"}, {"input": "c", "answer": "d"}],
     r"train.jsonl:2: no column\(s\) \['target'\]; the record has \['answer', 'input'\]: set task.input_column / "
     r"task.target_column \(now 'input', 'target'\)$"),
    ([{"input": "a", "target": "b"}, {"input": "c", "target": "b"}, {"input": "c", "target": "  "}],
     r"train.jsonl:3: empty target \(column 'target'\); every example needs one$"),
    ([{"input": "a", "target": "b"}] * 2 + [{"input": "word " * 600, "target": "b"}],
     r"train.jsonl:3: the input is 601 tokens; at most 480 fit \(task.max_length=480; model 'tiny_gpt2' has 512 "
     r"positions, task.max_target_length=32 of them kept for the target\)$"),
])
def test_bad_text_input_is_one_line_naming_file_and_line(compose_cfg, tmp_path, monkeypatch, rows, message):
    from idspam.runner.train import train

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the check")

    monkeypatch.setattr("idspam.backbone.load_backbone", no_weights)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"input": "a", "target": "b"}])
    with pytest.raises(UserError, match=message) as err:
        train(compose_cfg("task=csv_text", f"task.train_file={train_file}", f"task.validation_file={dev}",
                          "model=tiny_gpt2", "task.max_length=480", "task.max_target_length=32", *FAST))
    assert "\n" not in str(err.value)


def test_classification_task_reads_as_label_words_with_eos(compose_cfg):
    """task=demo (the paper's sentiment format) under head=generate: the input is head=lm's decoder template,
    the target the label word of the example's class and the EOS."""
    from idspam.tasks import mlm_verbalizer
    from idspam.text import Tokenize, label_word_ids

    run, spec, tok, _, data = built(compose_cfg, "task=demo", "model=tiny_gpt2", "head=generate",
                                    "task.max_train_samples=16", "task.max_eval_samples=8")
    data.setup()
    template, words = mlm_verbalizer(spec, run.task)
    lm = Tokenize(tok, run.task.max_length, template, False, decoder=True)
    from idspam.tasks import load_split

    raw = load_split(spec, run.task, "train", None, run.seed)
    ids = label_word_ids(tok, words)
    train = data.splits["train"]
    assert len(train) == 16
    for i in range(len(train)):
        row, start, label = train[i]["input_ids"], train[i]["target_start"], train[i]["labels"]
        assert row[:start] == lm([raw["text"][i]])["input_ids"][0]
        assert row[start:] == [ids[label], tok.sep_token_id]
        assert train[i]["reference"] == words[label]


@needs_glue
def test_sst2_reads_as_label_words(compose_cfg):
    run, spec, tok, _, data = built(compose_cfg, "task=sst2", f"data_dir={GLUE_DIR}", "model=tiny_gpt2",
                                    "head=generate", "task.max_train_samples=8", "task.max_eval_samples=8")
    data.setup()
    assert {r for r in data.splits["validation"]["reference"]} <= {"terrible", "great"}
    assert all(r[-1] == tok.sep_token_id for r in data.splits["train"]["input_ids"])


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize("overrides,message", [
    (["model=tiny", "head=generate"], r"head=generate trains a decoder's causal-LM head; model 'tiny' is an encoder "
                                      r"\(valid heads here: cls, mlm\)"),
    (["model=minilm", "head=generate"], r"model 'minilm' is an encoder"),
    (["model=tiny_gpt2", "head=generate", "task.max_length=500"], r"task.max_length=500 \+ task.max_target_length=64 "
                                                                   r"is beyond the 512 positions"),
    (["model=tiny_gpt2", "head=generate", "head.strategy=nucleus"], r"unknown head.strategy 'nucleus'; valid: greedy, "
                                                                    r"sample, beam"),
    (["model=tiny_gpt2", "head=generate", "method=dept"], r"method.max_length=256 is shorter than task.max_length \+ "
                                                          r"task.max_target_length=320; .* set method.max_length=320"),
])
def test_bad_generate_config_is_one_line_before_weights(compose_cfg, monkeypatch, overrides, message):
    from idspam.runner.train import train

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the check")

    monkeypatch.setattr("idspam.backbone.load_backbone", no_weights)
    with pytest.raises(UserError, match=message):
        train(compose_cfg("task=demo", *overrides))


def test_text_task_needs_the_generate_head(compose_cfg, tmp_path):
    from idspam.runner.checks import validate

    with pytest.raises(UserError, match=r"task=csv_text is text-to-text: it needs head=generate \(got head=cls\)"):
        validate(compose_cfg("model=tiny_gpt2", *text_files(tmp_path)))


def test_generate_head_has_no_positions_so_the_last_layer_is_never_pruned(compose_cfg, tmp_path):
    _, _, _, model, _ = built(compose_cfg, "model=tiny_gpt2", "head=generate", *text_files(tmp_path))
    assert model.prune_last_layer and not hasattr(model.head, "positions")
    assert sum(p.numel() for p in model.head.parameters() if p.requires_grad) == 0


def test_text_metrics_exact_match_chrf_and_label_words():
    from idspam.runner.metrics import TextMetrics
    from idspam.tasks import SPECS, TaskSpec

    text = TextMetrics(TaskSpec(name="t", label_names=None, metric="chrf", text_to_text=True))
    text.update(["the cat sat", " hello  world"], ["the cat sat on the mat", "hello world"])
    values = text.compute()
    assert values["exact_match"] == 0.5 and 0.5 < values["chrf"] < 1
    classes = TextMetrics(SPECS["demo"], classes=True)
    classes.update(["great", "terrible", "greatest"], ["great", "great", "terrible"], torch.tensor([1, 1, 0]))
    values = classes.compute()
    assert values["accuracy"] == pytest.approx(1 / 3) and values["exact_match"] == pytest.approx(1 / 3)
    # "greatest" is no label word: outside both classes (class 1's F1 2/3, class 0's 0), not the other class
    assert values["macro_f1"] == pytest.approx(1 / 3) and values["f1"] == pytest.approx(2 / 3)
    # generations that are all label words: the task's own metrics, as head=lm/cls compute them
    from idspam.runner.metrics import TaskMetrics

    words, labels = ["great", "terrible", "great", "great"], torch.tensor([1, 0, 0, 1])
    classes.reset()
    classes.update(words, ["great", "terrible", "terrible", "great"], labels)
    same = TaskMetrics(SPECS["demo"])
    same.update(torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 1]), 2).float(), labels)
    values = classes.compute()
    for name, value in same.compute().items():
        assert values[name] == pytest.approx(value), name


# ---------------------------------------------------------------- end to end


def test_generation_settings_map_to_hf_keywords():
    from idspam.config import HeadConfig
    from idspam.heads import generation_kwargs

    greedy = generation_kwargs(HeadConfig(type="generate", max_new_tokens=7), 102, 0)
    assert greedy == {"max_new_tokens": 7, "eos_token_id": 102, "pad_token_id": 0, "do_sample": False, "num_beams": 1}
    beam = generation_kwargs(HeadConfig(type="generate", strategy="beam", num_beams=3), 102, 0)
    assert beam["num_beams"] == 3 and beam["do_sample"] is False
    sample = generation_kwargs(HeadConfig(type="generate", strategy="sample", temperature=0.7, top_p=0.9), 102, 0)
    assert sample["do_sample"] and sample["temperature"] == 0.7 and sample["top_p"] == 0.9


@needs_generation
@pytest.mark.parametrize("model_name,method,side,extra", [
    ("tiny_gpt2", "idspam", "right", []), ("tiny_llama", "idspam", "left", []), ("tiny_gpt2", "lpt", "left", []),
    ("tiny_llama", "lora", "right", ["head.strategy=beam", "head.num_beams=2"])])
def test_generate_trains_scores_writes_predictions_and_reloads(compose_cfg, tmp_path, model_name, method, side, extra):
    from idspam.api import load_adapter
    from idspam.runner.train import train

    out = tmp_path / "run"
    results = train(compose_cfg(*text_files(tmp_path), f"model={model_name}", f"method={method}",
                                f"model.padding_side={side}", f"paths.output_dir={out}", *FAST, *extra))
    assert results["status"] == "finished" and results["head"] == "generate"
    assert results["parameters"]["head"] == 0 and results["parameters"]["method"] > 0
    saved = json.loads((out / "results.json").read_text())
    epoch = saved["epochs"][-1]
    assert {"validation/exact_match", "validation/chrf"} <= set(epoch)
    assert saved["monitor"] == "validation/chrf"
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8 and (out / "predictions" / "epoch0.jsonl").is_file()
    assert [p["input"] for p in predictions] == [f"say {w}" for w in WORDS]
    assert [p["target"] for p in predictions] == [f"{w} {w}" for w in WORDS]
    exact = sum(p["prediction"] == p["target"] for p in predictions) / 8
    assert epoch["validation/exact_match"] == pytest.approx(exact)
    adapter = json.loads((out / "adapter" / "idspam_adapter.json").read_text())
    assert adapter["head"]["type"] == "generate" and adapter["head"]["max_new_tokens"] == 4
    hf = json.loads((out / "adapter" / "generation_config.json").read_text())
    assert hf["max_new_tokens"] == 4 and hf["eos_token_id"] == 102
    assert hf.get("num_beams", 1) == (2 if extra else 1)
    assert adapter["head"]["strategy"] == ("beam" if extra else "greedy")
    predictor = load_adapter(out / "adapter")
    assert predictor.generate([p["input"] for p in predictions]) == [p["prediction"] for p in predictions]
    if not extra:  # greedy: more new tokens extend the same text (beam search may pick other beams)
        longer = predictor.generate(["say hello"], max_new_tokens=6)[0]
        assert longer.startswith(predictions[0]["prediction"])
    # idspam-predict on the dev file: the same generations, the targets beside them
    from idspam.tools.predict import main

    main([str(out / "adapter"), "--input", str(tmp_path / "dev.jsonl"), "--output", str(tmp_path / "pred.jsonl")])
    lines = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [(o["prediction"], o["target"]) for o in lines] == [(p["prediction"], p["target"]) for p in predictions]
    main([str(out / "adapter"), "--input", str(tmp_path / "dev.jsonl"), "--output", str(tmp_path / "one.jsonl"),
          "--max-new-tokens", "1"])
    one = [json.loads(line)["prediction"] for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert one == predictor.generate([p["input"] for p in predictions], max_new_tokens=1)
    assert one != [p["prediction"] for p in predictions]  # 4 tokens (the run's setting) gave more
    # a single input (no padding: transformers drops the attention mask) gets the text it gets inside a batch
    assert [predictor.generate([p["input"]])[0] for p in predictions] == [p["prediction"] for p in predictions]
    (tmp_path / "single.jsonl").write_text((tmp_path / "dev.jsonl").read_text().splitlines()[1] + "\n")
    main([str(out / "adapter"), "--input", str(tmp_path / "single.jsonl"), "--output", str(tmp_path / "s.jsonl")])
    assert json.loads((tmp_path / "s.jsonl").read_text())["prediction"] == predictions[1]["prediction"]


@needs_generation
def test_classification_task_trains_as_text_and_reports_its_metrics(compose_cfg, tmp_path):
    from idspam.runner.train import train

    results = train(compose_cfg("task=demo", "model=tiny_gpt2", "task.max_train_samples=16",
                                "task.max_eval_samples=16", *FAST))
    epoch = results["epochs"][-1]
    assert {"validation/accuracy", "validation/macro_f1", "validation/exact_match", "validation/chrf"} <= set(epoch)
    assert results["monitor"] == "validation/accuracy"
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert {p["target"] for p in predictions} <= {"terrible", "great"}
    right = sum(p["prediction"] == p["target"] for p in predictions) / len(predictions)
    assert epoch["validation/accuracy"] == pytest.approx(right)


METHODS = ["idspam", "idspam_meanpool", "prompt_tuning", "ptuning", "lpt", "smop", "dept", "lora", "finetune"]


@needs_generation
@pytest.mark.parametrize("model_name,side,method", [("tiny_gpt2", "right", m) for m in METHODS]
                         + [("tiny_llama", "left", m) for m in ("idspam", "lpt", "dept")])
def test_training_path_scores_the_tokens_generation_picks(compose_cfg, tmp_path, model_name, side, method):
    """What training computes for input + target (the prompt from the input alone) is what decoding computes:
    greedy generation's tokens are the argmax of the training path's logits fed the tokens so far."""
    from idspam.generation import generate

    _, _, tok, model, data = built(compose_cfg, f"model={model_name}", f"model.padding_side={side}",
                                   f"method={method}", "head=generate", "task.max_length=64",
                                   "task.max_target_length=16", *text_files(tmp_path),
                                   *(["method.max_length=80"] if method == "dept" else []))
    with torch.no_grad():
        for p in model.method.parameters():  # a method that starts at zero (LoRA's B) must still show
            p.add_(0.05 * torch.randn_like(p))
    texts = [("say hello",), ("a longer input, padded in the batch",)]
    enc = data.tokenize(texts)
    batch = data.collate([{"input_ids": i, "target_start": s, "reference": "", "labels": -1}
                          for i, s in zip(enc["input_ids"], enc["target_start"], strict=True)])
    new = generate(model, batch["gen_input_ids"], batch["gen_attention_mask"], max_new_tokens=4, do_sample=False,
                   num_beams=1, eos_token_id=None, pad_token_id=tok.pad_token_id, min_new_tokens=4)
    assert new.shape == (2, 4)
    for r, ids in enumerate(enc["input_ids"]):  # each input alone (unpadded: transformers drops the mask): the same
        one = data.collate([{"input_ids": ids, "target_start": enc["target_start"][r], "reference": "", "labels": -1}])
        alone = generate(model, one["gen_input_ids"], one["gen_attention_mask"], max_new_tokens=4, do_sample=False,
                         num_beams=1, eos_token_id=None, pad_token_id=tok.pad_token_id, min_new_tokens=4)
        assert torch.equal(alone[0], new[r]), f"input {r} alone"
    for r, ids in enumerate(enc["input_ids"]):
        for s in range(4):
            row = ids + new[r, :s].tolist()
            step = data.collate([{"input_ids": row + [tok.sep_token_id], "target_start": len(ids), "reference": "",
                                  "labels": -1}])
            with torch.no_grad():
                logits = model(step)  # the training path: positions predicting the target tokens
            assert int(logits[s].argmax()) == int(new[r, s]), f"row {r} step {s}"
