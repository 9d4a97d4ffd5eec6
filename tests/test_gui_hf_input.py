"""A Hugging Face language model opened in the window without a typed shape gets token ids (the
last image shape, 1x3x224x224, failed in its embedding): dropped on the window, or chosen in the
open dialog."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytestqt")
transformers = pytest.importorskip("transformers")

TIMEOUT = 120_000


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("hf") / "llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_a_dropped_language_model_opens_with_token_ids(qtbot, win, errors, llama_dir):
    win.ctx.settings.setValue("lastShape", "1,3,224,224")
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.models.open_dropped(f"hf:{llama_dir}")
    x = win.session.inputs.args[0]
    assert not errors and x.dtype == torch.int64 and tuple(x.shape) == (1, 32)


def test_the_open_dialog_suggests_token_ids_for_a_language_model(qtbot, llama_dir):
    from gui.widgets.load_dialog import LoadDialog
    d = LoadDialog(shape="1,3,224,224")
    qtbot.addWidget(d)
    d.path.setText(f"hf:{llama_dir}")
    d.suggest_input()
    assert d.shape.text() == "1,32" and d.dtype.currentText() == "int64"
    d.path.setText("torchvision:resnet18")
    d.suggest_input()  # nothing to suggest: the typed shape stays
    assert d.shape.text() == "1,32"
