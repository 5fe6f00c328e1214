"""Plain-PyTorch reference numerics: the ground truth every kernel is tested against.

Layout convention: sequences are (batch, length, channels); recurrent states are fp32 (a decode
pool's may be bf16: every step loads it into fp32, computes in fp32 and rounds only what it stores).
`reset` is a (batch, length) bool tensor, True where a new document starts: the
recurrent state and the convolution window are cleared before that token.
"""

from thinkfast.ops.reference.attention import attention_ref, decode_attention_ref, repeat_kv
from thinkfast.ops.reference.conv import causal_conv1d_ref, causal_conv1d_update_ref
from thinkfast.ops.reference.decode_glue import add_rms_norm_ref, rms_norm_ref, rope_kv_write_ref, silu_mul_ref
from thinkfast.ops.reference.mamba1_step import mamba1_fused_step_ref
from thinkfast.ops.reference.mixer_matrix import discrete_mamba2_mixer_matrix, segment_sum
from thinkfast.ops.reference.sampling import gumbel_argmax_ref
from thinkfast.ops.reference.selective_scan import selective_scan_ref, selective_state_update_ref
from thinkfast.ops.reference.ssd import ssd_chunked_ref, ssd_sequential_ref, ssd_step_ref
from thinkfast.ops.reference.token_loss import token_loss_chunk_ref

__all__ = [
    "add_rms_norm_ref",
    "rms_norm_ref",
    "rope_kv_write_ref",
    "silu_mul_ref",
    "attention_ref",
    "decode_attention_ref",
    "repeat_kv",
    "causal_conv1d_ref",
    "causal_conv1d_update_ref",
    "discrete_mamba2_mixer_matrix",
    "gumbel_argmax_ref",
    "mamba1_fused_step_ref",
    "segment_sum",
    "selective_scan_ref",
    "selective_state_update_ref",
    "ssd_chunked_ref",
    "ssd_sequential_ref",
    "ssd_step_ref",
    "token_loss_chunk_ref",
]
