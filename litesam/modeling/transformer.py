"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock

Memo = dict[tuple[int, str], Any]  # image-side tensors shared by every chunk of one image's prompts


def memoized(memo: Memo | None, owner: object, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, kept in ``memo`` under (owner, name) and reused from it: tensors that depend on the
    shared image alone are computed once per image, not once per chunk of prompts. No memo: computed."""
    if memo is None:
        return compute()
    key = (id(owner), name)
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def fresh_memo(memo: Memo, *modules: nn.Module) -> Memo:
    """``memo`` (kept with one image across decodes), emptied first if the weights of ``modules`` changed
    since it was filled (an optimiser step or ``load_state_dict`` bumps their tensor versions) or autocast
    switched: what it holds is then recomputed."""
    params = [p for m in modules for p in m.parameters()]
    device = params[0].device.type if params else "cpu"
    stamp = (torch.is_autocast_enabled(device), tuple((id(p), p._version) for p in params))
    if memo.get((0, "stamp")) != stamp:
        memo.clear()
        memo[(0, "stamp")] = stamp
    return memo


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may shrink the width by ``downsample_rate``.

    With ``reassociate`` set (:func:`litesam.build.prepare_for_inference` does), attention between a few
    prompt tokens and the many image tokens multiplies in the cheaper order: the image tokens are never
    projected per prompt; the token side's projections are folded into the weights instead (see
    :meth:`_few_queries` and :meth:`_many_queries`). Same result up to float rounding.
    """

    reassociate: bool = False

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2).expand(batch, -1, -1, -1)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        memo: Memo | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q: BxNqxC, k and v: BxNkxC -> BxNqxC, plus ``residual`` (broadcastable to it) when given. A batch
        of 1 on either side is shared by the other's B (projected once, broadcast), which is how one image
        serves many prompts. ``memo``: where the reassociated paths keep the shared side's projections for
        the next chunk of the same image (give it only while that side is the image alone)."""
        if self.reassociate and self.num_heads * min(q.shape[1], k.shape[1]) < self.internal_dim:
            if q.shape[1] < k.shape[1] and k.shape[0] in (1, q.shape[0]):
                out = self._few_queries(q, k, v, memo)
                return out if residual is None else residual + out
            if q.shape[1] > k.shape[1] and q.shape[0] in (1, k.shape[0]):
                return self._many_queries(q, k, v, memo, residual)
        batch = max(q.shape[0], k.shape[0])
        q, k, v = self.q_proj(q), self.k_proj(k), self.v_proj(v)
        out = F.scaled_dot_product_attention(
            self._heads(q, batch), self._heads(k, batch), self._heads(v, batch)
        )
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return out if residual is None else residual + out

    def _project_shared(self, rows: int, width: int, memo: Memo | None) -> bool:
        """Whether to project a shared (batch 1) image side of ``width`` channels rather than fold the
        projection into the ``rows`` = prompts x tokens on the other side: always when a ``memo`` keeps
        the projection for later calls; else when that costs fewer multiply-adds per image token
        (``width x internal_dim`` once against ``rows x (heads x width - internal_dim)`` more for the
        folded products; one or two prompts of 7 tokens fold)."""
        return (
            memo is not None
            or rows * (self.num_heads * width - self.internal_dim) >= width * self.internal_dim
        )

    def _few_queries(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, memo: Memo | None
    ) -> torch.Tensor:
        """Tokens -> image: q BxTxC (T small), k and v (1 or B)xNxC -> BxTxC.

        A shared image side (batch 1) is projected once and every head meets all prompts in one GEMM.
        Per-prompt image tokens are not projected at all: per head h, ``softmax(q_h (k Wk_h' + bk_h)')
        (v Wv_h' + bv_h)`` is computed as ``softmax((q_h Wk_h) k') v Wv_h' + bv_h`` (the key bias adds a
        constant per query row, which softmax ignores; attention rows sum to 1, so the value bias passes
        through): 2 x T x heads x C multiply-adds per image token instead of 2 x C x C/rate.
        """
        b, t, _ = q.shape
        heads, scale = self.num_heads, (self.internal_dim // self.num_heads) ** -0.5
        qh = self.q_proj(q).view(b, t, heads, -1).permute(2, 0, 1, 3)  # heads x B x T x d
        if k.shape[0] == 1 and v.shape[0] == 1 and self._project_shared(b * t, k.shape[-1], memo):
            d = qh.shape[-1]
            kh = memoized(memo, self, "k", lambda: self.k_proj(k[0]).view(-1, heads, d).permute(1, 2, 0))
            vh = memoized(memo, self, "v", lambda: self.v_proj(v[0]).view(-1, heads, d).transpose(0, 1))
            attn = (qh.reshape(heads, b * t, -1) @ kh).mul_(scale).softmax(-1)
            out = (attn @ vh).view(heads, b, t, -1).permute(1, 2, 0, 3).flatten(2)  # B x T x Ci
            return self.out_proj(out)
        k, v = k.expand(b, -1, -1), v.expand(b, -1, -1)
        wk = self.k_proj.weight.view(heads, -1, k.shape[-1])  # heads x d x C
        wv = self.v_proj.weight.view(heads, -1, v.shape[-1])
        folded = (qh.transpose(0, 1) @ wk).mul_(scale).flatten(1, 2)  # B x heads*T x C
        attn = torch.bmm(folded, k.transpose(1, 2)).softmax(-1)  # B x heads*T x N
        mixed = torch.bmm(attn, v).view(b, heads, t, -1)  # B x heads x T x C
        out = (mixed @ wv.transpose(1, 2)).transpose(1, 2).flatten(2) + self.v_proj.bias  # B x T x Ci
        return self.out_proj(out)

    def _many_queries(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        memo: Memo | None,
        residual: torch.Tensor | None,
    ) -> torch.Tensor:
        """Image -> tokens: q (1 or B)xNxC, k and v BxTxC (T small) -> BxNxC.

        The value and output projections fold into one heads*T x C matrix per prompt
        (``sum_h attn_h (v_h Wo_h')``); per-prompt queries fold ``Wq_h`` into the keys the same way
        (``(Wq_h' k_h')' q' + bq_h k_h'``), a shared query side is projected once and meets all
        prompts' keys in one GEMM per head. Scores are kept heads*T x N (image tokens innermost), so the
        softmax over the T tokens is an elementwise reduction across T rows. Each head's attention rows
        sum to 1, so the output bias joins the values (``bo / heads`` per head), and the product
        accumulates straight into the residual.
        """
        b, t, _ = k.shape
        heads, ci = self.num_heads, self.internal_dim
        d, n = ci // heads, q.shape[1]
        kh = self.k_proj(k).view(b, t, heads, d).mul_(d**-0.5)
        vh = self.v_proj(v).view(b, t, heads, d).transpose(1, 2)  # B x heads x T x d
        wo = self.out_proj.weight.view(-1, heads, d).transpose(0, 1)  # heads x C x d
        values = (vh @ wo.transpose(1, 2).unsqueeze(0)).flatten(1, 2)  # B x heads*T x C
        values += self.out_proj.bias / heads
        if q.shape[0] == 1 and self._project_shared(b * t, q.shape[-1], memo):
            qh = memoized(memo, self, "q", lambda: self.q_proj(q[0]).view(n, heads, d).permute(1, 2, 0))
            keys = kh.permute(2, 0, 1, 3).reshape(heads, b * t, d)
            scores = (keys @ qh).view(heads, b, t, n).transpose(0, 1)  # B x heads x T x N (strided)
        else:
            wq = self.q_proj.weight.view(heads, d, -1)  # heads x d x C
            folded = (kh.transpose(1, 2) @ wq.unsqueeze(0)).flatten(1, 2)  # B x heads*T x C
            bias = (kh.transpose(1, 2) @ self.q_proj.bias.view(heads, d, 1)).view(b, -1, 1)
            scores = torch.baddbmm(bias, folded, q.expand(b, -1, -1).transpose(1, 2)).view(b, heads, t, n)
        attn = torch.sub(scores, scores.amax(2, keepdim=True), out=scores.new_empty(b, heads, t, n)).exp_()
        attn /= attn.sum(2, keepdim=True)
        attn = attn.view(b, heads * t, n).transpose(1, 2)  # B x N x heads*T
        return torch.bmm(attn, values) if residual is None else torch.baddbmm(residual, attn, values)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        memo: Memo | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries BxTxC, keys (1 or B)xNxC -> updated (queries, keys); ``memo`` as in :class:`Attention`."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        shared = memo if keys.shape[0] == 1 else None  # the image alone, not yet written by the prompts
        keys_pe = memoized(shared, self, "keys_pe", lambda: keys + key_pe)
        attn = self.cross_attn_token_to_image(queries + query_pe, keys_pe, keys, shared)
        queries = self.norm2(queries + attn)
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.cross_attn_image_to_token(keys_pe, queries + query_pe, queries, shared, residual=keys)
        keys = self.norm4(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` plus a final token->image attention."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate, i == 0
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        memo: Memo | None = None,
        tokens_out: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: (B or 1)xCxHxW; point_embedding: BxNxC -> (tokens BxNxC, image BxHWxC).

        An image batch of 1 is shared by all B prompt sets: its projections are computed once, and it
        becomes per-prompt only where the prompts first write into it (image->token attention). A
        ``memo`` (a dict, empty for a new image) keeps them for further calls with the same image.
        ``tokens_out``: only the first that many tokens are wanted (returned BxTxC); the final attention,
        where tokens no longer meet each other, is then computed for those alone.
        """
        shared = memo if image_embedding.shape[0] == 1 else None
        keys = memoized(shared, self, "keys", lambda: image_embedding.flatten(2).transpose(1, 2).contiguous())
        key_pe = memoized(memo, self, "key_pe", lambda: image_pe.flatten(2).transpose(1, 2).contiguous())
        queries = point_embedding
        for i, layer in enumerate(self.layers):  # keys are per prompt after the first layer
            queries, keys = layer(queries, keys, point_embedding, key_pe, shared if i == 0 else None)
        queries, point_embedding = queries[:, :tokens_out], point_embedding[:, :tokens_out]
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
