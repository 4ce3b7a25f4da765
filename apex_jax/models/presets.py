"""Named architectures for models trained from scratch (the CLI's `vit-tiny`, the reproduction's
ViTs): HF config dicts sized to a data set's images."""

from __future__ import annotations

VIT_PRESETS = {
    # A small ViT trained from scratch (d_model 64, 4 layers, 4 heads, MLP 128).
    "vit-tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
    # A smaller one for smoke tests.
    "vit-micro": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}


def vit_hf_config(preset: str, channels: int, side: int) -> dict:
    """An HF ViT config dict for square images [channels, side, side]: the patch size gives a
    4x4 patch grid (16 patches + [CLS]), e.g. 7x7 patches on 28x28 MNIST, 2x2 on 8x8 digits."""
    if preset not in VIT_PRESETS:
        raise ValueError(f"unknown ViT preset {preset!r}; choose from {list(VIT_PRESETS)}.")
    return dict(model_type="vit", image_size=side, patch_size=max(1, side // 4), num_channels=channels,
                hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True, **VIT_PRESETS[preset])
