import pytest

from mivl.edge.errors import InputError
from mivl.edge.prompt import INTERNVL_SYSTEM, build_prompt, get_template


def test_hermes2_single_image():
    text = build_prompt("Hermes-2", "What is this?", [2], tokens_per_tile=2)
    assert text == ("<|im_start|>system\n" + INTERNVL_SYSTEM + "<|im_end|><|im_start|>user\n"
                    "<img>" + "<IMG_CONTEXT>" * 4 + "</img>\nWhat is this?<|im_end|>"
                    "<|im_start|>assistant\n")


def test_internvl2_5_separator_has_newline():
    text = build_prompt("internvl2_5", "Hi", system="S")
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_phi3_template():
    text = build_prompt("phi3-chat", "Hi", system="S")
    assert text == "<|system|>\nS<|end|><|user|>\nHi<|end|><|assistant|>\n"
    assert get_template("phi3-chat").stop == "<|end|>"


def test_several_images_get_labels():
    text = build_prompt("internlm2-chat", "Compare.", [1, 3], tokens_per_tile=1, system="")
    assert "Image-1: <img><IMG_CONTEXT></img>\nImage-2: <img>" + "<IMG_CONTEXT>" * 3 + "</img>\nCompare." in text


def test_history_keeps_first_image_and_no_new_prefix():
    hist = [("<image>\nWhat is it?", "A car.")]
    text = build_prompt("Hermes-2", "And its colour?", [1], history=hist, tokens_per_tile=1, system="S")
    assert text == ("<|im_start|>system\nS<|im_end|><|im_start|>user\n<img><IMG_CONTEXT></img>\nWhat is it?"
                    "<|im_end|><|im_start|>assistant\nA car.<|im_end|><|im_start|>user\nAnd its colour?"
                    "<|im_end|><|im_start|>assistant\n")


def test_placeholder_count_must_match():
    with pytest.raises(InputError, match="2 <image> placeholder"):
        build_prompt("Hermes-2", "<image><image>", [1])
    with pytest.raises(InputError, match="unknown chat template"):
        get_template("vicuna")
