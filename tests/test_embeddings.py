"""`train --embeddings FILE`: word vectors start the text model's embedding rows of the tokens they
name, exactly; the other rows keep their random start; bad files are one sentence each."""

from __future__ import annotations

import gzip
import json

import own_datafiles as odf
import pytest
import torch

from edgeprune.config import resolve_train_config
from edgeprune.errors import UserError
from edgeprune.models.bilstm import BiLSTM
from edgeprune.models.cnn import SeedCNN
from edgeprune.models.embeddings import init_embedding
from edgeprune.train import train_run

TOKENS = ["<pad>", "<unk>", "good", "bad", "meh", "film"]
# in another order than the vocabulary's, so a row written in file order lands on the wrong token
VECTORS = {"film": [1e-3, 0.0, -7.5, 4.25], "bad": [-0.5, 1.5, -2.0, 3.0], "good": [0.5, -1.25, 2.0, 0.125]}


def _write(path, lines: list[str]) -> None:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    else:
        path.write_text("\n".join(lines) + "\n")


def _vector_lines(header: bool = True) -> list[str]:
    lines = ["4 4"] if header else []  # word2vec's header: count, width
    lines += [f"{w} " + " ".join(str(x) for x in v) for w, v in VECTORS.items()]
    lines.insert(2, "zebra 9 9 9 9")  # not in the vocabulary: skipped
    lines.append("<pad> 5 5 5 5")  # the padding row is never written
    return lines


@pytest.mark.parametrize("name", ["vectors.txt", "vectors.txt.gz"])
def test_the_rows_of_the_tokens_in_the_file_start_from_its_vectors_and_the_rest_keep_theirs(tmp_path, name):
    _write(tmp_path / name, _vector_lines())
    torch.manual_seed(0)
    model = BiLSTM(vocab_size=len(TOKENS), embed_dim=4, hidden=[[3, 3]], source_vocab=len(TOKENS))
    before = model.embedding.weight.detach().clone()
    info = init_embedding(model, TOKENS, tmp_path / name)
    after = model.embedding.weight.detach()
    for w, v in VECTORS.items():
        assert torch.equal(after[TOKENS.index(w)], torch.tensor(v)), w
    for i in (TOKENS.index("<unk>"), TOKENS.index("meh")):
        assert torch.equal(after[i], before[i])
    assert torch.count_nonzero(after[0]) == 0  # <pad> stays zero
    assert info["tokens_found"] == 3 and info["width"] == 4 and info["vocabulary"] == len(TOKENS)


@pytest.mark.parametrize(
    "lines, model, says",
    [
        (
            _vector_lines(),
            BiLSTM(vocab_size=6, embed_dim=3, hidden=[[2, 2]]),
            """'{"embed_dim": 4}' or vectors 3 wide""",
        ),
        (["lion 1 2 3 4", "tiger 5 6 7 8"], BiLSTM(vocab_size=6, embed_dim=4, hidden=[[2, 2]]), "none of the 6"),
        (["good 1 2 x 4"], BiLSTM(vocab_size=6, embed_dim=4, hidden=[[2, 2]]), "line 1 has a value that is not"),
        (["good 1 2 3 4", "bad 1 2 3"], BiLSTM(vocab_size=6, embed_dim=4, hidden=[[2, 2]]), "line 2 has 3 numbers"),
        ([], BiLSTM(vocab_size=6, embed_dim=4, hidden=[[2, 2]]), "holds no vectors"),
        (_vector_lines(), SeedCNN(), "has no nn.Embedding with one row per vocabulary token"),
    ],
    ids=["width", "no-token-found", "not-a-number", "ragged", "empty", "not-a-text-model"],
)
def test_a_file_that_cannot_start_the_embedding_is_one_sentence(tmp_path, lines, model, says):
    _write(tmp_path / "v.txt", lines)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=None) as e:
        init_embedding(model, TOKENS, tmp_path / "v.txt")
    assert says in str(e.value) and "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-written


def test_train_starts_the_bilstm_from_the_vectors_and_records_them(tmp_path):
    data = odf.write_csv(tmp_path / "t.csv", ["text", "label"], odf.sentiment_rows(40, classes=("bad", "good")))
    words = {"film": [0.25] * 8, "the": [-0.75] * 8, "awful": [0.5, -0.5] * 4, "nosuchword": [1.0] * 8}
    _write(tmp_path / "v.txt", [f"{w} " + " ".join(map(str, v)) for w, v in words.items()])
    cfg = resolve_train_config(
        dataset=str(data),
        out=tmp_path / "run",
        epochs=1,
        lr=1e-12,  # one Adam step moves a weight by about lr: the trained rows are still the vectors
        prune=False,
        threads=1,
        device="cpu",
        batch_size=16,
        embeddings=str(tmp_path / "v.txt"),
        model_config={"embed_dim": 8, "hidden": [[4, 4]]},
    )
    train_run(cfg, quiet=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())["tokens"]
    weight = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]["embedding.weight"]
    found = [w for w in words if w in vocab]  # "film" and "the" are in every row, "awful" in some
    assert {"film", "the"} <= set(found) and "nosuchword" not in found
    for w in found:
        torch.testing.assert_close(weight[vocab.index(w)], torch.tensor(words[w]), rtol=0, atol=1e-6)
    assert saved["embeddings_init"]["tokens_found"] == len(found)
    assert saved["config"]["embeddings"] == str(tmp_path / "v.txt")
