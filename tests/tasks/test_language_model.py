"""The language model: metrics on hand-made cases, tying, adaptive softmax, AWD regularisers,
stateful evaluation, config errors, and train → save → load → same answer."""

import json
import math

import pytest
import torch

from lstmkit.data.text import StreamChunk, builtin_corpus, split_text
from lstmkit.data.tokenizers import CharTokenizer, WordTokenizer
from lstmkit.nn.embedding_dropout import EmbeddingDropout
from lstmkit.tasks.language_model import (
    LanguageModel,
    LanguageModelConfig,
    LanguageModelStep,
    LMEvaluation,
    evaluate_language_model,
    load_language_model,
    train_language_model,
)
from lstmkit.training import OptimConfig, TrainConfig

TINY = LanguageModelConfig(embedding_size=8, hidden_size=16, num_layers=1, bptt=16)


def fixed_distribution_model(probs: list[float]) -> LanguageModel:
    """Predicts ``probs`` whatever it reads: zero decoder weights, log-probabilities as bias."""
    model = LanguageModel(TINY.__class__(**{**TINY.to_dict(), "tie_weights": False}), len(probs))
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.tensor(probs).log())
    return model


def test_perplexity_is_exp_of_mean_nll_on_a_hand_made_case():
    tokenizer = CharTokenizer(["a", "b"])
    model = fixed_distribution_model([0.75, 0.25])
    result = evaluate_language_model(model, tokenizer, "aabab", streams=1, bptt=3)
    # targets "abab": -log .75 twice and -log .25 twice
    nll = -2 * math.log(0.75) - 2 * math.log(0.25)
    assert result.tokens == 4 and result.characters == 4
    assert result.nll_sum == pytest.approx(nll, rel=1e-6)
    assert result.cross_entropy == pytest.approx(nll / 4, rel=1e-6)
    assert result.perplexity == pytest.approx((0.75 * 0.25) ** -0.5, rel=1e-6)  # 2.3094
    assert result.bits_per_char == pytest.approx(nll / 4 / math.log(2), rel=1e-6)


def test_bits_per_character_of_words_divide_by_the_characters():
    tokenizer = WordTokenizer(["<unk>", "<eos>", "to", "be"])
    model = fixed_distribution_model([0.1, 0.2, 0.3, 0.4])
    result = evaluate_language_model(model, tokenizer, "to be to\nbe", streams=1)
    # targets: be to <eos> be -> text "be to\nbe" has 8 characters
    nll = -(2 * math.log(0.4) + math.log(0.3) + math.log(0.2))
    assert result.characters == 8
    assert result.bits_per_char == pytest.approx(nll / 8 / math.log(2), rel=1e-6)
    assert LMEvaluation(nll_sum=4.0, tokens=2, characters=4).perplexity == pytest.approx(math.e**2)


def test_chunked_stateful_evaluation_equals_one_pass():
    torch.manual_seed(0)
    tokenizer = CharTokenizer.fit(builtin_corpus("shakespeare"))
    model = LanguageModel(TINY, tokenizer.vocab_size)
    text = builtin_corpus("shakespeare")[:600]
    chunked = evaluate_language_model(model, tokenizer, text, streams=3, bptt=7)
    whole = evaluate_language_model(model, tokenizer, text, streams=3, bptt=1000)
    assert chunked.tokens == whole.tokens == 3 * (200 - 1)
    assert chunked.nll_sum == pytest.approx(whole.nll_sum, rel=1e-5)


def test_weight_tying_shares_the_embedding_and_bridges_sizes():
    tied = LanguageModel(TINY, 50)
    assert tied.decoder.weight is tied.embedding.weight
    assert tied.bridge is not None and tied.bridge.in_features == 16  # hidden 16 -> embedding 8
    untied = LanguageModel(LanguageModelConfig(**{**TINY.to_dict(), "tie_weights": False}), 50)
    assert tied.num_parameters() == untied.num_parameters() - 50 * 8 + (16 * 8 + 8) - 50 * 8
    same = LanguageModel(LanguageModelConfig(embedding_size=16, hidden_size=16, num_layers=1), 50)
    assert same.bridge is None
    projected = LanguageModel(
        LanguageModelConfig(embedding_size=8, hidden_size=16, lstm={"proj_size": 8}), 50
    )
    assert projected.bridge is None  # LSTMP output already has the embedding's size


def test_adaptive_softmax_log_probs_are_normalised_and_match_the_nll():
    config = LanguageModelConfig(
        **{**TINY.to_dict(), "tie_weights": False, "adaptive_softmax": True, "cutoffs": [5, 20]}
    )
    torch.manual_seed(0)
    model = LanguageModel(config, 60).eval()
    tokens = torch.randint(0, 60, (2, 5))
    targets = torch.randint(0, 60, (2, 5))
    out = model(tokens, targets=targets)
    log_probs = model.log_probs(out.dropped)  # (2, 5, 60)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    expected = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(out.nll, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cutoffs must lie in \\[1, 9\\] .*got \\(5, 20\\)"):
        LanguageModel(config, 10)


def test_step_adds_activation_and_temporal_activation_regularisation():
    config = LanguageModelConfig(**{**TINY.to_dict(), "ar_alpha": 2.0, "tar_beta": 3.0})
    torch.manual_seed(0)
    model = LanguageModel(config, 20).train()  # no dropout: deterministic
    chunk = StreamChunk(torch.randint(0, 20, (2, 6)), torch.randint(0, 20, (2, 6)), True)
    step = LanguageModelStep(config.ar_alpha, config.tar_beta)
    loss = step(model, chunk, None).loss
    out = model(chunk.inputs, None, chunk.targets)
    h = out.raw  # (2, 6, 16), equal to the dropped output with output_dropout=0
    expected = out.nll.mean() + 2.0 * (h**2).mean() + 3.0 * ((h[:, 1:] - h[:, :-1]) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    model.eval()  # validation: plain NLL
    torch.testing.assert_close(step(model, chunk, None).loss, out.nll.mean())


def test_embedding_dropout_drops_whole_word_types():
    torch.manual_seed(0)
    drop = EmbeddingDropout(0.5).train()
    weight = torch.ones(10, 4)
    tokens = torch.tensor([[1, 2, 1, 3, 2, 1]])
    out = drop(tokens, weight)  # (1, 6, 4)
    for token in (1, 2, 3):
        rows = out[0, tokens[0] == token]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # every occurrence alike
        assert rows[0].unique().tolist() in ([0.0], [2.0])  # dropped or scaled by 1/(1-p)
    assert torch.equal(drop.eval()(tokens, weight), weight[tokens])


def test_config_errors_name_field_and_value():
    cases = [
        ({"tokenizer": "bytes"}, "tokenizer must be one of 'char', 'word', 'bpe'; got 'bytes'"),
        ({"embedding_dropout": 1.5}, "embedding_dropout must be a number in \\[0, 1\\), got 1.5"),
        ({"bptt": 0}, "bptt must be a positive integer, got 0"),
        ({"ar_alpha": -1.0}, "ar_alpha must be a non-negative number, got -1.0"),
        ({"tokenizer": "bpe", "vocab_size": 100}, "vocab_size must be at least 257 .*got 100"),
        ({"adaptive_softmax": True}, "tie_weights=True cannot be used with adaptive_softmax"),
        ({"cutoffs": (5, 3)}, "cutoffs must be strictly increasing, got \\(5, 3\\)"),
        ({"lstm": {"bidirectional": True}}, "lstm options \\['bidirectional'\\] are not allowed"),
        ({"lstm": {"cell": "gru"}}, "cell must be one of .*; got 'gru'"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            LanguageModelConfig(**changes)
    with pytest.raises(ValueError, match="unknown language model option\\(s\\) \\['layers'\\]"):
        LanguageModelConfig.from_dict({"layers": 2})
    config = LanguageModelConfig(cutoffs=(10, 100), lstm={"cell": "cifg"})
    assert LanguageModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_train_save_load_gives_the_same_answer(tmp_path, one_thread):
    train_text, val_text = split_text(builtin_corpus("shakespeare"), 0.1)
    config = LanguageModelConfig(
        embedding_size=32,
        hidden_size=64,
        num_layers=1,
        bptt=32,
        batch_streams=8,
        eval_streams=4,
        variable_bptt=True,
        embedding_dropout=0.05,
        output_dropout=0.1,
        weight_dropout=0.1,
        ar_alpha=1.0,
        tar_beta=1.0,
        lstm={"backend": "fused"},  # the fastest backend on CPU for this configuration
    )
    train = TrainConfig(max_epochs=3, optim=OptimConfig(lr=1e-2))
    result = train_language_model(config, train_text, val_text, train, run_dir=tmp_path)
    vocab = result.tokenizer.vocab_size
    assert result.validation.cross_entropy < 0.85 * math.log(vocab)  # learnt beyond uniform
    assert [row["step"] for row in result.history] == sorted(row["step"] for row in result.history)
    assert len(result.history) == 3 and all("seconds" in row for row in result.history)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["validation"]["perplexity"] == pytest.approx(result.validation.perplexity)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["task"] == "language_model" and "tokenizer" not in saved  # checkpoints hold it

    loaded = load_language_model(tmp_path)
    assert loaded.config == config and loaded.path.name == "best.safetensors"
    again = evaluate_language_model(loaded.model, loaded.tokenizer, val_text, streams=4)
    before = evaluate_language_model(result.model, result.tokenizer, val_text, streams=4)
    assert again.nll_sum == pytest.approx(before.nll_sum, rel=1e-6)


def test_load_rejects_what_is_not_a_language_model(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint in the run directory"):
        load_language_model(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint or run directory at"):
        load_language_model(tmp_path / "missing.safetensors")


def test_resume_continues_the_run_with_the_saved_tokenizer(tmp_path, one_thread):
    train_text, val_text = split_text(builtin_corpus("shakespeare"), 0.1)
    config = LanguageModelConfig(**{**TINY.to_dict(), "lstm": {"backend": "fused"}})
    first = train_language_model(
        config, train_text, val_text, TrainConfig(max_epochs=2, max_steps=3), run_dir=tmp_path
    )
    resumed = train_language_model(
        config,
        train_text,
        val_text,
        TrainConfig(max_epochs=2, max_steps=6),
        run_dir=tmp_path,
        resume=True,
    )
    assert first.fit.steps == 3 and resumed.fit.steps == 6
    assert resumed.tokenizer.to_dict() == first.tokenizer.to_dict()
    assert [row["step"] for row in resumed.history] == [3, 6]
    assert "seconds" not in resumed.history[0] and "seconds" in resumed.history[1]
