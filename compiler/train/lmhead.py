"""The student's LM head scored only where a label is, on every device.

TRL's SFTTrainer already replaces the model's forward with a fused head (`trl.trainer.utils.add_fused_lm_head`)
that never builds the (tokens x vocabulary) logits at once. But off Triton devices (CPU) it scores *every*
position, prompt and padding included, to keep tile shapes fixed for compilers: with Gemma's 262k-token
vocabulary that is ~1 GFLOP and ~1 M exponentials per prompt token, for tokens whose loss is zero. Here the
hidden states are gathered at the labelled positions first and only those go through TRL's chunked kernel
(`trl.kernels.ChunkedLogProbFunction`), so the head costs what the answers cost.

Models whose logits carry a transform other than softcapping / `logit_scale` keep TRL's own head.
"""

from __future__ import annotations

import functools
import types
from typing import Any

_OTHER_SCALES = ("output_multiplier", "lm_head_multiplier", "logits_scaling")
CHUNK = 32768  # vocabulary tile, as TRL's


def compact_lm_head(model: Any, outputs: tuple[str, ...] = ("log_probs", "entropy", "is_top1")) -> bool:
    """Patch `model` (the causal LM, under any PEFT wrapper) so that `forward(..., fused_lm_head=True)`
    scores only labelled positions. Returns False (model untouched) where the head has a transform this
    does not reproduce, or the model was not patched by TRL first."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    text_config = model.config.get_text_config()
    if any(getattr(text_config, k, None) is not None for k in _OTHER_SCALES):
        return False
    if getattr(text_config, "output_router_logits", False):  # MoE aux loss: leave it to TRL
        return False
    softcap = getattr(text_config, "final_logit_softcapping", None)
    scale = getattr(text_config, "logit_scale", None)
    scale = 1.0 if scale is None else scale
    trl_forward = model.forward
    if not isinstance(trl_forward, types.MethodType) or trl_forward.__func__.__code__.co_name != "_fused_forward":
        return False

    @functools.wraps(type(model).forward)
    def _forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                 **kwargs):
        if not fused_lm_head or shift_labels is not None:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = getattr(self, "base_model")(*args, **kwargs).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        labels = labels[:, 1:].to(head.weight.device)
        mask = labels != -100
        per_token = ChunkedLogProbFunction.apply(hidden.to(head.weight.device)[mask], head.weight, head.bias,
                                                 labels[mask], 1.0, CHUNK, softcap, scale, outputs)
        # masked_scatter keeps an all-unlabelled micro-batch connected to the graph (a differentiable zero)
        log_probs, entropy, _sq, _mean, is_top1 = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        loss = -log_probs.sum() / count
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, is_top1=is_top1,
                                   label_mask=mask)

    model.forward = types.MethodType(_forward, model)
    model.kdc_compact_head = True
    return True
