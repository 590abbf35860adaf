"""MaPLe on tiny random CLIPs of both vision tower kinds: its prompts must reach the image side."""


import open_clip
import pytest
import torch
import torch.nn.functional as F

from dicap.prompting.maple import MaPLe
from dicap.testing.tiny_models import CLIP_CONFIG
from helpers import CONTEXT, NAMES, tokenize, with_key

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT_CFG = {"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0}
VIT_CFG = {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0}
RESNET_CONFIG = with_key(with_key(CLIP_CONFIG, "text_cfg", TEXT_CFG), "vision_cfg.image_size", 16)


def make_clip(kind: str, text_layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    text_cfg = {**TEXT_CFG, "layers": text_layers}
    if kind == "vit":
        model = open_clip.CLIP(embed_dim=32, vision_cfg=VIT_CFG, text_cfg=text_cfg)
    else:
        model = open_clip.CLIP(embed_dim=32, vision_cfg=RESNET_CONFIG["vision_cfg"], text_cfg=text_cfg)
    with torch.no_grad():
        # as conftest's clip_model: open_clip's init leaves a tiny text tower nearly blind to its tokens
        model.token_embedding.weight.normal_(std=0.5)
        model.positional_embedding.normal_(std=0.1)
    return model.eval()


def make_learner(clip: torch.nn.Module, trained: bool = True, **kwargs) -> MaPLe:
    """With ``trained``, the projections get non-zero weights, as after training (the ResNet's start at zero)."""
    learner = MaPLe(clip, tokenize, NAMES, n_ctx=2, ctx_init="a photo", **kwargs)
    if trained and learner.vision_kind == "resnet":
        for proj in learner.vision_proj:
            nudge(proj.weight)
    return learner


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def nudge(param: torch.Tensor) -> None:
    """A random change: a constant shift of every dimension would vanish in the blocks' LayerNorm."""
    with torch.no_grad():
        param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))


@pytest.fixture(params=["vit", "resnet"])
def kind(request) -> str:
    return request.param


def test_text_prompts_reach_the_vision_tower(kind):
    """MaPLe's defining coupling: moving the text context (or a deep prompt) moves the image features."""
    learner = make_learner(make_clip(kind))
    x = images()
    before = learner.image_features(x)
    assert before.shape == (4, 32)
    torch.testing.assert_close(before.norm(dim=-1), torch.ones(4))

    nudge(learner.ctx)
    moved_ctx = learner.image_features(x)
    assert not torch.allclose(before, moved_ctx, atol=1e-5)

    nudge(learner.deep_text)
    assert not torch.allclose(moved_ctx, learner.image_features(x), atol=1e-5)

    learner.image_features(x).sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert learner.deep_text.grad.abs().sum() > 0


def test_on_a_resnet_maple_starts_at_the_frozen_models_features():
    clip = make_clip("resnet")
    learner = make_learner(clip, trained=False)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(learner.image_features(x), F.normalize(clip.visual(x), dim=-1))
    learner.image_features(x).sum().backward()
    assert all(proj.weight.grad.abs().sum() > 0 for proj in learner.vision_proj)  # the coupling still trains


def test_no_hooks_left_and_plain_forward_unchanged():
    clip = make_clip("resnet")
    x = images()
    plain = clip.encode_image(x)
    make_learner(clip).image_features(x)
    assert all(not m._forward_pre_hooks for m in clip.modules())
    torch.testing.assert_close(clip.encode_image(x), plain)


def test_without_prompts_the_tower_is_open_clips(kind):
    """The re-run vision tower mirrors open_clip's: with no prompt tokens (ViT) or zero biases
    (ResNet) it gives exactly ``clip.visual``'s output."""
    clip = make_clip(kind)
    learner = make_learner(clip)
    x = images()
    with torch.no_grad():
        if kind == "vit":
            out = learner._vit_forward(x, [p[:0] for p in learner.vision_prompts()])
        else:
            out = learner._resnet_forward(x, [torch.zeros_like(p) for p in learner.vision_prompts()])
        torch.testing.assert_close(out, clip.visual(x))


def test_class_features_shape_and_norm(kind):
    learner = make_learner(make_clip(kind))
    text = learner.class_features(learner.image_features(images()))
    assert text.shape == (len(NAMES), 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(len(NAMES)))
    before = text.detach()
    nudge(learner.deep_text)
    assert not torch.allclose(before, learner.class_features(None), atol=1e-5)  # deep prompts reach the text tower


def test_clip_stays_frozen_through_an_optimiser_step(kind):
    clip = make_clip(kind)
    learner = make_learner(clip)
    learner.train()
    assert learner.training and not clip.training and not any(m.training for m in clip.modules())
    frozen = {k: v.clone() for k, v in clip.state_dict().items()}  # parameters and BatchNorm statistics
    optimiser = torch.optim.SGD(learner.trainable_state().values(), lr=0.1)
    logits = learner.similarities(images()) / 0.07
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    optimiser.step()
    assert all(not p.requires_grad and p.grad is None for p in clip.parameters())
    for key, value in clip.state_dict().items():
        torch.testing.assert_close(value, frozen[key], rtol=0, atol=0)


def test_trainable_state_names(kind):
    learner = make_learner(make_clip(kind))
    names = set(learner.trainable_state())
    assert names == {"ctx", "deep_text", "vision_proj.0.weight", "vision_proj.0.bias",
                     "vision_proj.1.weight", "vision_proj.1.bias"}
    assert learner.deep_text.shape == (1, 2, 32)


def test_depth_is_clipped_to_the_model():
    assert make_learner(make_clip("vit")).depth == 2  # 2 text layers, 2 vision blocks
    assert make_learner(make_clip("resnet")).depth == 2  # 2 text layers (4 ResNet stages)
    deep = make_learner(make_clip("resnet", text_layers=5))
    assert deep.depth == 4  # the 4 ResNet stages
    assert [p.out_features for p in deep.vision_proj] == [32, 32, 48, 192]  # channels entering layer1..4
    shallow = make_learner(make_clip("vit"), depth=1)
    assert shallow.depth == 1 and shallow.deep_text.shape == (0, 2, 32) and len(shallow.vision_proj) == 1
    shallow.image_features(images()).sum().backward()
    assert shallow.ctx.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="depth"):
        make_learner(make_clip("vit"), depth=0)


def test_construction_is_deterministic(kind):
    clip = make_clip(kind)
    torch.manual_seed(123)
    a = MaPLe(clip, tokenize, NAMES, 2, None)
    torch.manual_seed(456)
    b = MaPLe(clip, tokenize, NAMES, 2, None)
    for (name, p), q in zip(a.trainable_state().items(), b.trainable_state().values()):
        assert torch.equal(p, q), name
    assert not torch.allclose(a.ctx, a.deep_text[0])  # the deep prompts are not a copy of ctx


def test_uint8_images_go_through_preprocess():
    clip = make_clip("resnet")
    preprocess = lambda u8: u8.permute(0, 3, 1, 2).float() / 255.0 - 0.5  # noqa: E731
    learner = make_learner(clip, preprocess=preprocess, lr=0.1, epochs=3)  # recipe keys are ignored
    u8 = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(learner.image_features(u8), learner.image_features(preprocess(u8)))
    with pytest.raises(ValueError, match="preprocess"):
        make_learner(clip).image_features(u8)


@pytest.mark.parametrize("batch_first", [True, False])
def test_deep_prompts_replace_the_context_positions(batch_first):
    """Before block i >= 1 the prompt positions hold deep[i - 1], in either sequence layout."""
    from dicap.prompting.maple import _run_blocks

    seen = []
    record = lambda x, attn_mask=None: seen.append(x.clone()) or x  # noqa: E731
    transformer = torch.nn.Module()
    transformer.batch_first, transformer.resblocks = batch_first, [record] * 3
    x = torch.zeros(2, 5, 4)  # (batch, sequence, width)
    deep = [torch.full((2, 4), 1.0), torch.full((2, 4), 2.0)]
    out = _run_blocks(transformer, x, deep, start=1, attn_mask=None)
    assert out.shape == x.shape
    for block, value in enumerate([0.0, 1.0, 2.0]):
        tokens = seen[block] if batch_first else seen[block].transpose(0, 1)
        assert (tokens[:, 1:3] == value).all() and (tokens[:, [0, 3, 4]] == 0).all()
