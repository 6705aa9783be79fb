"""``lstmkit text train|generate|evaluate`` end to end, and its errors for bad input."""

import json

import pytest
import torch
from typer.testing import CliRunner

from lstmkit.cli import app
from lstmkit.data.text import builtin_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a shared machine
    root = tmp_path_factory.mktemp("text")
    corpus = root / "corpus.txt"
    corpus.write_text(builtin_corpus("shakespeare"), encoding="utf-8")
    run = root / "run"
    result = runner.invoke(
        app,
        [
            "text", "train", str(corpus), "--out", str(run),
            "--embedding-size", "16", "--hidden-size", "32", "--layers", "1",
            "--bptt", "32", "--streams", "8", "--max-steps", "6", "--backend", "fused",
            "--no-progress",
        ],
    )  # fmt: skip
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root, run, result.output


def test_train_reports_and_writes_a_run_directory(trained):
    _, run, output = trained
    assert "validation: cross-entropy" in output and "bits/char" in output
    for name in ("config.json", "metrics.csv", "metrics.json", "checkpoints/last.safetensors"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["validation"]["tokens"] > 0


def test_generate_streams_a_continuation_of_the_prompt(trained):
    _, run, _ = trained
    result = runner.invoke(
        app, ["text", "generate", str(run), "--prompt", "ROMEO:", "--max-tokens", "25"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ROMEO:")
    assert len(result.output.rstrip("\n")) >= len("ROMEO:") + 20
    again = runner.invoke(
        app, ["text", "generate", str(run), "--prompt", "ROMEO:", "--max-tokens", "25"]
    )
    assert again.output == result.output  # seed 0 by default
    beam = runner.invoke(
        app, ["text", "generate", str(run), "--strategy", "beam", "--max-tokens", "5"]
    )
    assert beam.exit_code == 0, beam.output
    stopped = runner.invoke(
        app,
        ["text", "generate", str(run), "--prompt", "ROMEO:", "--stop", " ", "--max-tokens", "200"],
    )
    assert stopped.exit_code == 0, stopped.output
    continuation = stopped.output[len("ROMEO:") : -1]  # the CLI ends with a newline
    assert continuation.endswith(" ") and continuation.count(" ") == 1, continuation


def test_evaluate_prints_the_three_measures(trained):
    root, run, _ = trained
    result = runner.invoke(app, ["text", "evaluate", str(run), str(root / "corpus.txt"), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["perplexity"] == pytest.approx(2.718281828 ** scores["cross_entropy"])
    assert scores["tokens"] == scores["characters"] == len(builtin_corpus("shakespeare")) - 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--top-p", "1.5"], "top_p must be a number in (0, 1], got 1.5"),
        (["--top-p", "0"], "top_p must be a number in (0, 1], got 0.0"),
        (["--temperature", "0"], "temperature must be a number > 0, got 0.0"),
        (["--max-tokens", "0"], "max_new_tokens must be an integer >= 1, got 0"),
        (["--prompt", "§ ok"], "the prompt has 1 character(s) the vocabulary lacks: '§'"),
        (["--stop", "§"], "stop '§' is not in the vocabulary"),
    ],
)
def test_generate_rejects_bad_settings(trained, options, message):
    _, run, _ = trained
    result = runner.invoke(app, ["text", "generate", str(run), *options])
    assert result.exit_code == 1
    assert message in result.output


def test_train_rejects_empty_and_non_utf8_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = runner.invoke(app, ["text", "train", str(empty), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "Error: the corpus is empty" in result.output
    binary = tmp_path / "bytes.txt"
    binary.write_bytes(b"ok \xff\xfe")
    result = runner.invoke(app, ["text", "train", str(binary), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "is not UTF-8 text: byte b'\\xff' at offset 3" in result.output
    result = runner.invoke(
        app, ["text", "train", str(binary), "--out", str(tmp_path / "r"), "--tokenizer", "x"]
    )
    assert "tokenizer must be one of 'char', 'word', 'bpe'; got 'x'" in result.output


def test_evaluate_rejects_text_with_unknown_characters(trained, tmp_path):
    _, run, _ = trained
    other = tmp_path / "other.txt"
    other.write_text("Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich\n")
    result = runner.invoke(app, ["text", "evaluate", str(run), str(other)])
    assert result.exit_code == 1
    assert "character(s) the vocabulary lacks" in result.output
