"""Mamba-1 mixer of MambaInLlama / M1 hybrids (docs/design.md §1.2): grouped B/C, d_state 16, GQA-shaped x and B."""

from __future__ import annotations

import torch
from torch import nn

from thinkfast.models.config import ThinkfastConfig
from thinkfast.models.sequence import SequenceInfo
from thinkfast.models.ssm_parts import DepthwiseCausalConv, HeadExpansion, init_dt_bias
from thinkfast.ops import dispatch


class Mamba1Mixer(nn.Module):
    """in_proj: d_model -> [z d_inner | x d_xb | B d_xb | C d_inner | dt_low dt_rank].

    x goes through conv + SiLU, then x and B are expanded to d_inner head-wise;
    channels are grouped by d_state so a group of d_state channels shares one B_t, C_t.
    """

    def __init__(self, config: ThinkfastConfig):
        super().__init__()
        cfg = config.mamba1
        self.d_inner, self.d_xb = config.d_inner, config.d_xb
        self.d_state, self.dt_rank = cfg["d_state"], cfg["dt_rank"]
        self.groups = self.d_inner // self.d_state
        self.split_sizes = [self.d_inner, self.d_xb, self.d_xb, self.d_inner, self.dt_rank]
        self.in_proj = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=config.attention_bias)
        self.conv1d = DepthwiseCausalConv(self.d_xb, cfg["d_conv"], activation="silu")
        expand = dict(n_kv=config.num_key_value_heads, n_heads=config.num_attention_heads, head_dim=config.head_dim)
        self.x_expand = HeadExpansion(**expand, learnable=cfg["learnable_gqa_expansion"])
        self.B_expand = HeadExpansion(**expand, learnable=cfg["learnable_gqa_expansion"])
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=False)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        # fp32 SSM parameters (kept fp32 even when the rest of the model is cast)
        self.dt_bias = nn.Parameter(init_dt_bias(self.d_inner))
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # S4D-real
        self.A_log = nn.Parameter(torch.log(a))  # (d_inner, d_state)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, config.hidden_size, bias=False)

    def allocate_state(self, num_slots: int, max_len: int, dtype: torch.dtype, device,
                       ssm_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        k = self.conv1d.kernel_size
        return {
            "conv": torch.zeros(num_slots, self.d_xb, k - 1, dtype=dtype, device=device),
            "ssm": torch.zeros(num_slots, self.d_inner, self.d_state, dtype=ssm_dtype, device=device),
        }

    def _project(self, u: torch.Tensor):
        z, x, B, C, dt_low = torch.split(self.in_proj(u), self.split_sizes, dim=-1)
        return z, x, B, C, self.dt_proj(dt_low)

    def forward(
        self,
        u: torch.Tensor,  # (b, l, d_model)
        seq: SequenceInfo,
        state: dict[str, torch.Tensor] | None = None,
        slots: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, l, _ = u.shape
        z, x, B, C, dt = self._project(u)  # z, C, dt: (b, l, d_inner); x, B: (b, l, d_xb)
        want_state = state is not None
        x = self.conv1d(x, reset=seq.reset, return_final_state=want_state)
        if want_state:
            x, conv_final = x
        y = dispatch.selective_scan(
            self.x_expand(x),
            dt,
            -torch.exp(self.A_log.float()),
            self.B_expand(B).view(b, l, self.groups, self.d_state),
            C.view(b, l, self.groups, self.d_state),
            self.D,
            z,
            self.dt_bias,
            softplus=True,
            reset=seq.reset,
            return_final_state=want_state,
        )
        if want_state:
            y, ssm_final = y
            state["conv"][slots] = conv_final.to(state["conv"].dtype)
            state["ssm"][slots] = ssm_final.to(state["ssm"].dtype)  # (b, d_inner, d_state), fp32 -> the pool's dtype
        return self.out_proj(y)

    def step(self, u: torch.Tensor, positions: torch.Tensor, state: dict[str, torch.Tensor], slots: torch.Tensor):
        """u (b, d_model) -> (b, d_model); updates conv and SSM state at `slots` in place."""
        z, x, B, C, dt = self._project(u)
        if self.x_expand.proj is None and self.B_expand.proj is None:
            # fixed GQA repeat: conv + expansion by index + state update + D + gate, no copies (ops/triton/mamba1_decode.py)
            y = dispatch.mamba1_fused_step(
                z, x, B, C, dt, state["conv"], self.conv1d.weight, self.conv1d.bias, state["ssm"], self.A_log,
                self.D, self.dt_bias, self.x_expand.head_dim, activation=self.conv1d.activation, softplus=True,
                state_indices=slots,
            )
            return self.out_proj(y)
        b = u.shape[0]
        x = self.conv1d.step(x, state["conv"], slots)
        y = dispatch.selective_state_update(
            state["ssm"],
            self.x_expand(x),
            dt,
            -torch.exp(self.A_log.float()),
            self.B_expand(B).view(b, self.groups, self.d_state),
            C.reshape(b, self.groups, self.d_state),
            self.D,
            z,
            self.dt_bias,
            softplus=True,
            state_indices=slots,
        )
        return self.out_proj(y)
