"""Tiny random-init Hugging Face classifiers written as save_pretrained directories (no download):
a BERT-like text model with a WordPiece tokenizer built with the tokenizers library, and a ViT."""

from __future__ import annotations

import string
from pathlib import Path

from edgeprune.data.synthetic import FILLER, NEGATIVE, POSITIVE

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _quiet():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def write_tokenizer(directory: Path, max_length: int = 64) -> None:
    """A BERT-style uncased WordPiece tokenizer (accents stripped, punctuation split) over the
    synthetic sentiment words plus single characters and a few suffixes, as AutoTokenizer reads it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(FILLER + POSITIVE + NEGATIVE + ["http", "www", "com", "cafe", "naive"]))
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces += [f"##{c}" for c in string.ascii_lowercase + string.digits] + ["##ing", "##ed", "##s"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(SPECIAL + words + pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    fast.save_pretrained(str(directory))
    return len(vocab)


def write_tiny_bert(directory: Path, heads: int = 2, num_labels: int = 2, max_length: int = 64, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 8 per head, FFN 32) with its tokenizer, in `directory`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    _quiet()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(directory, max_length)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=8 * heads,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=32,
        max_position_embeddings=max_length,
        num_labels=num_labels,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(cfg).save_pretrained(str(directory))
    return directory


def write_tiny_vit(
    directory: Path, image_size: int = 28, channels: int = 1, num_labels: int = 10, seed: int = 0
) -> Path:
    """A 2-layer ViT (patch 7, 2 heads of 8, FFN 32) for `channels`-channel images, in `directory`."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    _quiet()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = ViTConfig(
        image_size=image_size,
        patch_size=7,
        num_channels=channels,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=num_labels,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    ViTForImageClassification(cfg).save_pretrained(str(directory))
    return directory
