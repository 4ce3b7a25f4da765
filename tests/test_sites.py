"""apex_jax.sites: the one site-spec parser (presets, layer numbers and ranges, names)."""

from __future__ import annotations

import pytest

from apex_jax import sites

SITES = sites.site_names(3, has_head=True)  # a 3-block model with a head


def test_block_site_and_presets():
    assert sites.block_site(2, "mlp.hook_post") == "blocks.2.mlp.hook_post"
    outputs = [f"blocks.{i}.hook_resid_post" for i in range(3)]
    assert sites.parse_sites(SITES, "resid_post") == outputs
    assert sites.parse_sites(SITES, "blocks") == outputs
    assert sites.parse_sites(SITES, "all") == ["hook_embed", *outputs]
    assert sites.parse_sites(SITES, "embed") == ["hook_embed"]
    assert sites.parse_sites(SITES, "mlp_post") == [f"blocks.{i}.mlp.hook_post" for i in range(3)]
    assert set(sites.SITE_PRESETS) == {"resid_post", "blocks", "embed", "mlp_post", "all"}


def test_numbers_ranges_names_and_repeats():
    assert sites.parse_sites(SITES, "0,2") == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    assert sites.parse_sites(SITES, "1-2:mlp.hook_post") == ["blocks.1.mlp.hook_post", "blocks.2.mlp.hook_post"]
    assert sites.parse_sites(SITES, "0-1") == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert sites.parse_sites(SITES, " head.hook_cls , embed") == ["head.hook_cls", "hook_embed"]
    assert sites.parse_sites(SITES, "embed,all,0") == ["hook_embed", "blocks.0.hook_resid_post",
                                                       "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


def test_errors_list_the_choices():
    with pytest.raises(ValueError) as e:
        sites.parse_sites(SITES, "blocks.9.hook_resid_post")
    msg = str(e.value)
    assert "unknown site(s) ['blocks.9.hook_resid_post']" in msg
    assert all(p in msg for p in sites.SITE_PRESETS)
    assert "blocks.{0..2}.hook_resid_post" in msg and "layer numbers 0-2" in msg
    with pytest.raises(ValueError, match="outside 0-2"):
        sites.parse_sites(SITES, "1-3:hook_resid_post")
    with pytest.raises(ValueError, match="outside 0-2"):
        sites.parse_sites(SITES, "5")
    with pytest.raises(ValueError, match="unknown site"):
        sites.parse_sites(SITES, " , ")
    with pytest.raises(ValueError, match="unknown site preset"):
        sites.preset_sites("everything", 3)
