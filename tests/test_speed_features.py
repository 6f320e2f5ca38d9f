"""cache_lower gives the uncached results and never a stale cache; length-grouped batching."""

import json

import pytest
import torch

from idspam.errors import UserError
from idspam.runner.data import LengthGroupedBatchSampler
from idspam.runner.lower_cache import LowerCache

from .test_methods import batch_of, build

FAST = ["model=tiny", "trainer.max_epochs=3", "task.max_train_samples=96", "task.max_eval_samples=32", "logger=none"]


@pytest.mark.parametrize("name, layer", [("idspam", 2), ("idspam", 0), ("lpt", 3), ("smop", 0)])
def test_cached_lower_stack_gives_the_same_step(name, layer, tiny_backbone):
    _, tokenizer = tiny_backbone
    batch = {**batch_of(tokenizer), "index": torch.tensor([2, 0, 1])}
    losses, logits = {}, {}
    for cached in (False, True):
        model = build(name, run_layer=layer).train()
        model.method.eval()  # no dropout in the prompt or the head: compare the computation, not random draws
        model.head.eval()
        if cached:
            lengths = torch.zeros(3, dtype=torch.long)
            lengths[batch["index"]] = batch["attention_mask"].sum(1)
            model.lower_cache = LowerCache(lengths.tolist(), 32, embeddings_are_hidden=model.layer == 0,
                                           store_embeddings=True)
            model(batch)  # the first pass fills the cache
            assert model.lower_cache.has(batch["index"])
        out = model(batch)
        loss = torch.nn.functional.cross_entropy(out, batch["labels"])
        loss.backward()
        logits[cached], losses[cached] = out.detach(), loss.item()
        grads = [p.grad for p in model.method.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
    torch.testing.assert_close(logits[True], logits[False], atol=1e-6, rtol=0)
    assert losses[True] == pytest.approx(losses[False], abs=1e-6)


def test_cache_lower_run_equals_the_uncached_run_and_is_keyed(compose_cfg, tmp_path, monkeypatch):
    from idspam.runner.train import train

    monkeypatch.setenv("IDSPAM_CACHE_DIR", str(tmp_path / "cache"))

    def epochs(*overrides, out):
        train(compose_cfg(*FAST, *overrides, f"paths.output_dir={tmp_path / out}"))
        results = json.loads((tmp_path / out / "results.json").read_text())
        return [value for e in results["epochs"] for value in (e["train_loss"], e["validation/accuracy"])]

    disk = ["cache_lower=true", "cache_lower_memory_gb=0"]  # force the memory-mapped cache
    assert epochs(*disk, "layer=2", out="a") == pytest.approx(epochs("layer=2", out="b"), abs=1e-6)
    # another layer, then another tokenisation: each gets its own cache, none reuses a stale one
    assert epochs(*disk, "layer=1", out="c") == pytest.approx(epochs("layer=1", out="d"), abs=1e-6)
    assert epochs(*disk, "layer=1", "task.max_length=24", out="e") == pytest.approx(
        epochs("layer=1", "task.max_length=24", out="f"), abs=1e-6)
    def caches():  # split -> how many caches of it are on disk
        splits = [json.loads((f / "meta.json").read_text())["key"]["split"]
                  for f in (tmp_path / "cache" / "lower").iterdir()]
        return {split: splits.count(split) for split in splits}

    assert caches() == {"train": 3, "validation": 3}
    epochs(*disk, "layer=2", out="g")  # the same settings again: the first caches are reused
    assert caches() == {"train": 3, "validation": 3}


@pytest.mark.parametrize("disk", [False, True])
def test_evaluation_splits_run_the_lower_stack_once_and_predict_the_same(disk, compose_cfg, tmp_path, monkeypatch):
    """cache_lower covers the evaluation splits too (rows by their place in the file): every later validation
    reads them, and every epoch's per-example predictions equal the uncached run's."""
    from idspam.injection import InjectionEngine
    from idspam.runner.train import train

    monkeypatch.setenv("IDSPAM_CACHE_DIR", str(tmp_path / "cache"))
    original = InjectionEngine.lower
    calls = {"train": 0, "eval": 0}

    def counting(self, *args, **kwargs):
        calls["train" if torch.is_grad_enabled() else "eval"] += 1  # validation runs under inference mode
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InjectionEngine, "lower", counting)
    outputs = {}
    for cached in (False, True):
        calls.update(train=0, eval=0)
        out = tmp_path / f"run{cached}"
        options = ["cache_lower=true", *(["cache_lower_memory_gb=0"] if disk else [])] if cached else []
        train(compose_cfg(*FAST, "layer=2", "data.eval_batch_size=8", *options, f"paths.output_dir={out}"))
        outputs[cached] = [json.loads((out / "predictions" / f"epoch{e}.json").read_text()) for e in range(3)]
        if cached:
            assert calls == {"train": 96 // 16, "eval": 32 // 8}  # each training and evaluation batch once
        else:
            assert calls == {"train": 3 * 96 // 16, "eval": 3 * 32 // 8}
    assert outputs[True] == outputs[False]  # the same predictions, example by example, every epoch
    assert len(outputs[True][0]["validation"]["pred"]) == 32


@pytest.mark.parametrize("overrides, message", [
    (["method=lora"], "cache_lower=true needs a method that trains nothing below its layer; method=lora"),
    (["model.backbone_mode=train"], "cache_lower=true needs model.backbone_mode=eval"),
])
def test_cache_lower_refuses_what_it_cannot_cache(compose_cfg, overrides, message):
    from idspam.runner.checks import validate

    with pytest.raises(UserError, match=message):
        validate(compose_cfg("cache_lower=true", *overrides))


def test_length_grouped_batches_cover_every_example_once_with_less_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 120, (1000,), generator=gen).tolist()
    sampler = LengthGroupedBatchSampler(lengths, 16, seed=3, window=10)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 63
        assert sorted(i for b in batches for i in b) == list(range(1000))

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    sampler.set_epoch(0)
    grouped = list(sampler)
    shuffled = [list(range(1000))[k:k + 16] for k in range(0, 1000, 16)]
    assert padding(grouped) < padding(shuffled) / 4
    sampler.set_epoch(1)
    assert list(sampler) != grouped  # reshuffled every epoch
    sampler.set_epoch(0)
    assert list(sampler) == grouped  # and reproducible (resume)


def test_benchmark_quick_mode_writes_every_row(tmp_path, capsys):
    from idspam.tools.bench.main import main

    main(["--quick", "--out", str(tmp_path / "bench.json")])
    report = json.loads((tmp_path / "bench.json").read_text())
    names = [r["row"] for r in report["rows"]]
    assert names == ["inference", "idspam m=0", "idspam m=2", "idspam m=3", "idspam m=2 cache_lower",
                     "idspam m=2 pruned", "idspam m=2 cache_lower pruned", "lpt m=2",
                     "prompt_tuning (ours)", "lora (ours, peft inside)", "finetune", "peft prompt_tuning", "peft lora"]
    assert all(r["examples_per_second"] > 0 and r["peak_memory_mb"] is not None for r in report["rows"])
    assert "| peft prompt_tuning |" in capsys.readouterr().out and report["args"]["model"] == "tiny"


def test_benchmark_arguments_are_checked(capsys):
    from idspam.tools.bench.main import main

    with pytest.raises(SystemExit):
        main(["--precision", "fp8"])
    err = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'fp8'" in err and "bf16" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_llama"])
def test_benchmark_runs_on_decoders(tmp_path, model):
    """The decoder rows: ours and PEFT's prompt tuning and LoRA on the same random-weight decoder."""
    from idspam.tools.bench.main import main

    main(["--quick", "--model", model, "--out", str(tmp_path / "bench.json"),
          "--rows", "idspam m=2,idspam m=2 cache_lower,lpt m=2,peft lora"])
    report = json.loads((tmp_path / "bench.json").read_text())
    names = [r["row"] for r in report["rows"]]
    assert names == ["inference", "idspam m=2", "idspam m=2 cache_lower", "lpt m=2", "peft prompt_tuning", "peft lora"]
    assert all(r["min_examples_per_second"] <= r["examples_per_second"] <= r["max_examples_per_second"]
               for r in report["rows"])


def test_decode_benchmark_compares_against_peft_and_no_prompt(tmp_path, capsys):
    from idspam.tools.bench.main import main

    main(["--decode", "--model", "tiny_llama", "--batch", "2", "--length", "8", "--new-tokens", "3", "--repeats", "2",
          "--out", str(tmp_path / "decode.json")])
    report = json.loads((tmp_path / "decode.json").read_text())
    assert [r["row"] for r in report["rows"]] == ["no prompt (HF generate)", "peft prompt_tuning", "idspam m=2"]
    assert all(r["tokens_per_second"] > 0 for r in report["rows"])
    assert "| idspam m=2 |" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, expected", [
    (["method=idspam"], True), (["method=lpt"], True), (["method=lora"], False), (["method=finetune"], False),
    (["method=idspam", "model.backbone_mode=train"], False),
])
def test_cache_lower_auto_turns_on_only_where_it_applies(compose_cfg, overrides, expected):
    from idspam.runner.checks import validate

    assert validate(compose_cfg("cache_lower=auto", *overrides)).cache_lower is expected


def test_cache_lower_refuses_a_value_that_is_not_a_switch(compose_cfg):
    from idspam.runner.checks import validate

    with pytest.raises(UserError, match="cache_lower='sometimes'; valid: true, false, auto"):
        validate(compose_cfg("cache_lower=sometimes"))
