import pytest
import timm
import torch

from procedge.data import load_embedded_mnist, to_model_input
from procedge.errors import ProcedgeError
from procedge.methods import FeatureDims, StudentFeatures, create_method, method_registry
from procedge.models.load import Distiller, stage_channels, student_stage_paths
from procedge.models.student import create_backbone, feature_channels
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model

HALF = (0.5,) * 3


@pytest.fixture(scope="module")
def mnist_batch():
    data = load_embedded_mnist(0.2, 0)
    images = data.train.images[:32]
    return to_model_input(images, 64), to_model_input(images, 64, HALF, HALF), data.train.labels[:32]


@pytest.fixture(scope="module")
def teacher():
    return FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])


def student_and_dims(teacher: FrozenTeacher):
    backbone = create_backbone("resnet10t")
    m = teacher.model
    dims = FeatureDims(stage_channels(m, teacher.stage_paths, "teacher"), m.num_features, m.num_classes, feature_channels(backbone, 64), 10,
                       stage_channels(backbone, student_stage_paths(backbone, method_registry.get("pat").student_stage_count), "student"))
    return backbone, dims


def train_steps(distiller: Distiller, batch, steps: int, **kw) -> list[dict[str, float]]:
    student_in, teacher_in, labels = batch
    opt = torch.optim.AdamW(distiller.parameters(), 1e-3)
    weights, history = distiller.method.loss_weights(), []
    for step in range(steps):
        terms = distiller(student_in, labels, **({"teacher_images": teacher_in} if not kw else kw))
        assert all(torch.isfinite(v) for v in terms.values()), terms
        opt.zero_grad()
        sum(weights[k] * v for k, v in terms.items()).backward()
        if step == 0:  # DDP without find_unused_parameters: every parameter is in the graph every step
            assert [n for n, p in distiller.named_parameters() if p.grad is None] == []
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    return history


def test_pat_is_registered():
    assert "pat" in method_registry.names()
    assert method_registry.get("pat").student_stage_count == 4


def test_prompted_pat_trains_on_real_images_and_leaves_the_teacher_alone(mnist_batch, teacher):
    torch.manual_seed(0)
    backbone, dims = student_and_dims(teacher)
    method = create_method("pat", {}, dims)
    assert method.needs_live_teacher
    method.prepare(teacher, None, torch.zeros(1))
    assert [p.dw.in_channels for p in method.prompts] == [80, 192]  # inputs of blocks.4 and blocks.6
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    history = train_steps(Distiller(backbone, method, teacher), mnist_batch, 6)
    assert set(history[0]) == {"ce", "feat", "prompt"}
    assert history[-1]["feat"] < 0.85 * history[0]["feat"], history
    assert history[-1]["ce"] < 0.5 * history[0]["ce"], history
    for prompt in method.prompts:
        assert prompt.gate.grad is not None and prompt.gate.item() != 0.0
    assert all(torch.equal(v, before[k]) for k, v in teacher.model.state_dict().items())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    # outside teacher_forward the hooks are inert: the teacher is the plain teacher
    _, teacher_in, _ = mnist_batch
    with torch.no_grad():
        plain = teacher(teacher_in[:4]).logits
        prompted = method.teacher_forward(teacher, teacher_in[:4])
        assert torch.equal(teacher(teacher_in[:4]).logits, plain)
    assert torch.equal(prompted.plain_logits, plain) and not torch.equal(prompted.logits, plain)
    # a checkpoint loads into a fresh method without a teacher (prompts rebuilt from its shapes)
    fresh = create_method("pat", {}, dims)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.prompts[1].gate, method.prompts[1].gate)


def test_without_prompts_no_prompt_parameters_and_cached_teacher(mnist_batch, teacher):
    torch.manual_seed(0)
    backbone, dims = student_and_dims(teacher)
    method = create_method("pat", {"prompts": False, "dim": 64}, dims)
    method.prepare(teacher, None, torch.zeros(1))
    assert method.needs_live_teacher is False
    assert not any("prompt" in n for n, _ in method.named_parameters())
    with torch.no_grad():
        cached = teacher(mnist_batch[1])
    history = train_steps(Distiller(backbone, method), mnist_batch, 4, teacher_output=cached)
    assert set(history[0]) == {"ce", "feat"} == set(method.loss_weights())
    assert history[-1]["feat"] < history[0]["feat"], history
    assert isinstance(method.deploy_head()(torch.zeros(2, dims.student_final, 2, 2)), torch.Tensor)


def test_vit_teacher_tokens_are_prompted_past_the_prefix_tokens():
    torch.manual_seed(0)  # a small random ViT: shapes and the token path only
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=4, reg_tokens=1)
    teacher = FrozenTeacher(vit, ["blocks.1", "blocks.3"])
    method = create_method("pat", {"dim": 32, "heads": 2}, FeatureDims([192, 192], 192, 1000, 32, 5, [8, 16, 32, 32]))
    method.prepare(teacher, None, torch.zeros(1))
    assert [(p.dw.in_channels, p.prefix) for p in method.prompts] == [(192, 2), (192, 2)]
    with torch.no_grad():
        for p in method.prompts:
            p.gate.fill_(0.5)
    out = method.teacher_forward(teacher, torch.randn(2, 3, 64, 64))
    assert [tuple(s.shape) for s in out.stages] == [(2, 192, 4, 4)] * 2
    stages = [torch.randn(2, c, s, s) for c, s in zip([8, 16, 32, 32], [16, 8, 4, 2])]
    terms = method.losses(StudentFeatures(stages[-1], stages), out, torch.tensor([0, 1]))
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in method.parameters())


def test_bad_options_are_one_line():
    with pytest.raises(ProcedgeError, match="multiple of heads"):
        create_method("pat", {"dim": 30, "heads": 4}, FeatureDims([8], 8, 8, 8, 2, [8] * 4))
    with pytest.raises(ProcedgeError, match="grid"):
        create_method("pat", {"grid": 0}, FeatureDims([8], 8, 8, 8, 2, [8] * 4))
