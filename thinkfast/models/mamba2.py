"""Multi-head Mamba-2 mixers, both running on the SSD (simple gated linear attention) recurrence.

* DiscreteMamba2Mixer (Llamba / MOHAWK, docs/design.md §1.4): h_t = exp(-softplus(a_t)) h_{t-1} + B_t x_t^T,
  conv over xBC without activation, no gated norm, output gate silu(z + z_bias).
* Mamba2Mixer (MambaInLlama's Mamba-2 hybrid variant, docs/design.md §1.3): per-head dt and scalar A,
  h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, conv+SiLU over [x, B, C], gated RMSNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thinkfast.models.config import ThinkfastConfig
from thinkfast.models.sequence import SequenceInfo
from thinkfast.models.ssm_parts import DepthwiseCausalConv, HeadExpansion, gated_rms_norm, init_dt_bias
from thinkfast.ops import dispatch


def _ssd_sequence(x, g, B, C, seq: SequenceInfo, state, slots, chunk_size: int):
    """Run the SSD scan over a sequence; with `state`, store each row's final state at `slots`."""
    out = dispatch.ssd(x, g, B, C, reset=seq.reset, return_final_state=state is not None, chunk_size=chunk_size)
    if state is None:
        return out
    y, final = out
    state["ssm"][slots] = final.to(state["ssm"].dtype)  # (b, h, n, p), fp32 -> the pool's dtype
    return y


def _ssd_state(num_slots: int, heads: int, d_state: int, head_dim: int, device, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(num_slots, heads, d_state, head_dim, dtype=dtype, device=device)


class DiscreteMamba2Mixer(nn.Module):
    """in_proj: d_model -> [xBC (d_inner + 2 n_qk d_state) | z d_inner | a n_v], with a bias when
    `discrete_mamba2.in_proj_bias` (students of biased teachers: x/B/C rows <- v/k/q biases)."""

    def __init__(self, config: ThinkfastConfig):
        super().__init__()
        cfg = config.discrete_mamba2
        self.n_v, self.n_qk = cfg["n_v_heads"], cfg["n_qk_heads"]
        self.head_dim, self.d_state, self.chunk_size = cfg["head_dim"], cfg["d_state"], cfg["chunk_size"]
        self.d_inner = self.n_v * self.head_dim
        self.conv_dim = self.d_inner + 2 * self.n_qk * self.d_state
        self.split_sizes = [self.conv_dim, self.d_inner, self.n_v]
        self.in_proj = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=bool(cfg.get("in_proj_bias", False)))
        if self.in_proj.bias is not None:
            nn.init.zeros_(self.in_proj.bias)  # z and a rows must not shift z_bias / a_bias
        self.conv1d = DepthwiseCausalConv(self.conv_dim, cfg["d_conv"], activation=None)
        self.conv1d.set_identity()  # starts as plain gated linear attention (the teacher's structure)
        self.z_bias = nn.Parameter(torch.zeros(self.d_inner))
        # decay offset (our addition): exp(-softplus(a_bias)) starts in [0.905, 0.999], not 0.5
        self.a_bias = nn.Parameter(init_dt_bias(self.n_v))
        self.D = nn.Parameter(torch.ones(self.n_v))
        self.out_proj = nn.Linear(self.d_inner, config.hidden_size, bias=False)

    def allocate_state(self, num_slots: int, max_len: int, dtype: torch.dtype, device,
                       ssm_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        k = self.conv1d.kernel_size
        return {
            "conv": torch.zeros(num_slots, self.conv_dim, k - 1, dtype=dtype, device=device),
            "ssm": _ssd_state(num_slots, self.n_v, self.d_state, self.head_dim, device, ssm_dtype),
        }

    def _split_xbc(self, xBC: torch.Tensor):
        """(..., conv_dim) -> x (..., n_v, p), B and C (..., n_v, n) with qk heads repeated."""
        lead = xBC.shape[:-1]
        x, B, C = torch.split(xBC, [self.d_inner, self.n_qk * self.d_state, self.n_qk * self.d_state], dim=-1)
        rep = self.n_v // self.n_qk
        B = B.view(*lead, self.n_qk, self.d_state).repeat_interleave(rep, dim=-2)
        C = C.view(*lead, self.n_qk, self.d_state).repeat_interleave(rep, dim=-2)
        return x.view(*lead, self.n_v, self.head_dim), B, C

    def log_decay(self, a: torch.Tensor) -> torch.Tensor:
        return -F.softplus(a.float() + self.a_bias.float())

    def _gate_out(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y + self.D.to(y.dtype)[:, None] * x  # (..., n_v, p)
        y = y.flatten(-2) * F.silu(z + self.z_bias.to(z.dtype))
        return self.out_proj(y)

    def mixer_inputs(self, u: torch.Tensor, seq: SequenceInfo):
        """Everything the sequence map needs: x (b,l,h,p), log decay g (b,l,h), B, C (b,l,h,n), z."""
        xBC, z, a = torch.split(self.in_proj(u), self.split_sizes, dim=-1)
        xBC = self.conv1d(xBC, reset=seq.reset)
        x, B, C = self._split_xbc(xBC)
        return x, self.log_decay(a), B, C, z

    def forward(self, u, seq: SequenceInfo, state=None, slots=None):
        xBC, z, a = torch.split(self.in_proj(u), self.split_sizes, dim=-1)
        conv = self.conv1d(xBC, reset=seq.reset, return_final_state=state is not None)
        if state is not None:
            conv, conv_final = conv
            state["conv"][slots] = conv_final.to(state["conv"].dtype)
        x, B, C = self._split_xbc(conv)
        y = _ssd_sequence(x, self.log_decay(a), B, C, seq, state, slots, self.chunk_size)
        return self._gate_out(y, x, z)

    def step(self, u, positions, state, slots):
        xBC, z, a = torch.split(self.in_proj(u), self.split_sizes, dim=-1)
        x, B, C = self._split_xbc(self.conv1d.step(xBC, state["conv"], slots))
        y = dispatch.ssd_step(state["ssm"], x, self.log_decay(a), B, C, state_indices=slots)
        return self._gate_out(y, x, z)


class Mamba2Mixer(nn.Module):
    """in_proj: d_model -> [z d_inner | x d_xb | B d_xb | C d_inner | dt n_heads]; heads of dim head_dim,
    d_state = head_dim, x and B expanded head-wise (GQA) after the conv."""

    def __init__(self, config: ThinkfastConfig):
        super().__init__()
        cfg = config.mamba2
        self.n_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.d_state, self.chunk_size = cfg["d_state"], cfg["chunk_size"]
        if self.d_state != self.head_dim:
            raise ValueError(f"mamba2 hybrid mixer needs d_state == head_dim ({self.head_dim}), got {self.d_state}")
        self.d_inner, self.d_xb = config.d_inner, config.d_xb
        self.split_sizes = [self.d_inner, self.d_xb, self.d_xb, self.d_inner, self.n_heads]
        self.in_proj = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=config.attention_bias)
        self.conv_dim = 2 * self.d_xb + self.d_inner
        self.conv1d = DepthwiseCausalConv(self.conv_dim, cfg["d_conv"], activation="silu")
        expand = dict(n_kv=config.num_key_value_heads, n_heads=self.n_heads, head_dim=self.head_dim, learnable=False)
        self.x_expand, self.B_expand = HeadExpansion(**expand), HeadExpansion(**expand)
        self.dt_bias = nn.Parameter(init_dt_bias(self.n_heads))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.norm_eps = config.rms_norm_eps
        self.out_proj = nn.Linear(self.d_inner, config.hidden_size, bias=False)

    def allocate_state(self, num_slots, max_len, dtype, device, ssm_dtype: torch.dtype = torch.float32):
        k = self.conv1d.kernel_size
        return {
            "conv": torch.zeros(num_slots, self.conv_dim, k - 1, dtype=dtype, device=device),
            "ssm": _ssd_state(num_slots, self.n_heads, self.d_state, self.head_dim, device, ssm_dtype),
        }

    def _heads(self, xBC: torch.Tensor, dt: torch.Tensor):
        """conv output -> dt-scaled x (..., H, p), log decay g (..., H), B, C (..., H, n), raw x."""
        lead = xBC.shape[:-1]
        x, B, C = torch.split(xBC, [self.d_xb, self.d_xb, self.d_inner], dim=-1)
        x = self.x_expand(x).view(*lead, self.n_heads, self.head_dim)
        B = self.B_expand(B).view(*lead, self.n_heads, self.d_state)
        C = C.view(*lead, self.n_heads, self.d_state)
        delta = F.softplus(dt.float() + self.dt_bias.float())  # (..., H)
        g = delta * -torch.exp(self.A_log.float())
        return (x * delta[..., None].to(x.dtype)), g, B, C, x

    def _gate_out(self, y, x, z):
        y = y + self.D.to(y.dtype)[:, None] * x
        return self.out_proj(gated_rms_norm(y.flatten(-2), z, self.norm_weight, self.norm_eps))

    def forward(self, u, seq: SequenceInfo, state=None, slots=None):
        z, x, B, C, dt = torch.split(self.in_proj(u), self.split_sizes, dim=-1)
        conv = self.conv1d(torch.cat([x, B, C], dim=-1), reset=seq.reset, return_final_state=state is not None)
        if state is not None:
            conv, conv_final = conv
            state["conv"][slots] = conv_final.to(state["conv"].dtype)
        xs, g, Bh, Ch, xh = self._heads(conv, dt)
        y = _ssd_sequence(xs, g, Bh, Ch, seq, state, slots, self.chunk_size)
        return self._gate_out(y, xh, z)

    def step(self, u, positions, state, slots):
        z, x, B, C, dt = torch.split(self.in_proj(u), self.split_sizes, dim=-1)
        conv = self.conv1d.step(torch.cat([x, B, C], dim=-1), state["conv"], slots)
        xs, g, Bh, Ch, xh = self._heads(conv, dt)
        y = dispatch.ssd_step(state["ssm"], xs, g, Bh, Ch, state_indices=slots)
        return self._gate_out(y, xh, z)
