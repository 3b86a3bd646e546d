import onnx
import torch

from procedge.data import load_embedded_mnist, to_model_input
from procedge.export.onnx import export_onnx
from procedge.methods import FeatureDims, create_method
from procedge.models.deploy import StudentNet
from procedge.models.student import create_backbone

ALLOWED_HEAD_OPS = {"Conv", "Softmax", "Relu", "Add", "GlobalAveragePool", "Gemm", "Flatten"}


def _trained_looking_method():
    """ProC-KD parts with non-trivial BN statistics and prototypes, as after training."""
    torch.manual_seed(0)
    method = create_method("proc-kd", {"dim": 64, "num_prototypes": 24}, FeatureDims([112, 320], 1280, 1000, 512, 10))
    bn = method.tafa.mlp.norm
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
    return method.eval()


def test_folded_matches_unfolded_on_real_images():
    backbone = create_backbone("resnet10t").eval()
    method = _trained_looking_method()
    images = load_embedded_mnist(0.2, 0).val.images[:64]
    unfolded = StudentNet(backbone, method.augmented_head(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    folded = StudentNet(backbone, method.deploy_head(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    x = to_model_input(images, 64)
    with torch.no_grad():
        diff = (unfolded(x) - folded(x)).abs().max().item()
    assert diff < 1e-5, diff


def test_folded_head_exports_to_static_ops_only(tmp_path):
    path = tmp_path / "head.onnx"
    export_onnx(_trained_looking_method().deploy_head(), (1, 512, 2, 2), path)
    graph = onnx.load(str(path)).graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    assert len(inputs) == 1  # the feature map alone: no prototype input
    assert all(d.HasField("dim_value") for d in inputs[0].type.tensor_type.shape.dim)
    ops = {n.op_type for n in graph.node}
    assert {"Conv", "Softmax", "Relu", "Add", "GlobalAveragePool", "Gemm"} <= ops <= ALLOWED_HEAD_OPS


def test_a_checkpoint_with_positional_mlp_keys_still_loads():
    """Runs saved before the augmentation's MLP layers had names (mlp.0 ... mlp.3) load into the named layers."""
    method = _trained_looking_method()
    state = {k.replace("mlp.mix.", "mlp.0.").replace("mlp.norm.", "mlp.1.").replace("mlp.out.", "mlp.3."): v
             for k, v in method.state_dict().items()}
    assert "tafa.mlp.1.running_var" in state
    fresh = create_method("proc-kd", {"dim": 64, "num_prototypes": 24}, FeatureDims([112, 320], 1280, 1000, 512, 10))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.tafa.mlp.norm.running_var, method.tafa.mlp.norm.running_var)
