"""Label Studio pieces that need no server: configurations, image URLs, server settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from curator.exceptions import LabelStudioError, ValidationError
from curator.integrations.labelstudio import labelconfig, server
from curator.integrations.labelstudio.push import EMBED_MAX, image_url
from curator.settings import Settings

CLASSES = [str(c) for c in range(10)]


def test_generated_config_validates_and_lists_classes_in_order():
    cfg = labelconfig.image_classification(CLASSES)
    assert cfg.choices == tuple(CLASSES) and (cfg.from_name, cfg.to_name, cfg.image_field) == ("label", "image", "image")
    assert labelconfig.validate(cfg.xml, CLASSES).choices == tuple(CLASSES)
    with pytest.raises(ValidationError, match="no classes"):
        labelconfig.image_classification([])


@pytest.mark.parametrize("xml, message", [
    ("<View><Image", "not valid XML"),
    ('<View><Choices name="c" toName="i"/></View>', "no <Image> tag"),
    ('<View><Image name="i" value="$image"/><Text name="t" value="$caption"/>'
     '<Choices name="c" toName="i"><Choice value="0"/></Choices></View>', r"\$caption"),
    ('<View><Image name="i" value="$image"/></View>', "0 <Choices> tags"),
    ('<View><Image name="i" value="$image"/><Choices name="c" toName="x"><Choice value="0"/></Choices></View>',
     "toName='x'"),
    ('<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="0"/></Choices></View>',
     r"lacks the dataset's classes \['1', '2'"),
])
def test_user_config_that_does_not_fit_the_data_is_refused(xml, message):
    with pytest.raises(ValidationError, match=message):
        labelconfig.validate(xml, CLASSES)


def test_user_config_may_use_other_names_and_extra_choices():
    xml = ('<View><Image name="pic" value="$image"/><Choices name="digit" toName="pic">'
           + "".join(f'<Choice value="{c}"/>' for c in CLASSES + ["unsure"]) + "</Choices></View>")
    cfg = labelconfig.validate(xml, CLASSES)
    assert (cfg.from_name, cfg.to_name, "unsure" in cfg.choices) == ("digit", "pic", True)


def test_image_urls_serve_media_embed_small_and_link_large(tmp_path):
    media = (tmp_path / "media").resolve()
    inside = media / "ds" / "split" / "a.png"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"\x89PNG small")
    assert image_url(str(inside), "0" * 64, media) == ("/data/local-files/?d=ds/split/a.png", "ds")
    small = tmp_path / "outside.png"
    small.write_bytes(b"\x89PNG small")
    url, folder = image_url(str(small), "1" * 64, media)
    assert url.startswith("data:image/png;base64,") and folder is None
    large = tmp_path / "large.jpg"
    large.write_bytes(b"x" * (EMBED_MAX + 1))
    url, folder = image_url(str(large), "2" * 64, media)
    assert folder == "_linked" and url == f"/data/local-files/?d=_linked/{'2' * 64}.jpg"
    assert (media / "_linked" / f"{'2' * 64}.jpg").resolve() == large.resolve()
    # the same file by other spellings: through a symlinked workspace, with "..", at the root itself
    (tmp_path / "alias").symlink_to(tmp_path)
    via_link = tmp_path / "alias" / "media" / "ds" / "split" / "a.png"
    assert image_url(str(via_link), "0" * 64, media) == ("/data/local-files/?d=ds/split/a.png", "ds")
    dotted = f"{media}/ds/other/../split/a.png"
    assert image_url(dotted, "0" * 64, media) == ("/data/local-files/?d=ds/split/a.png", "ds")
    (media / "top.png").write_bytes(b"\x89PNG small")  # no top folder to make a storage of: embedded
    assert image_url(str(media / "top.png"), "3" * 64, media)[0].startswith("data:image/png;base64,")


def test_server_env_is_offline_and_serves_only_media(tmp_path, monkeypatch):
    monkeypatch.setenv("PORT", "9999")  # Label Studio would read it; curator must not pass it on
    settings = Settings(workspace=tmp_path / "ws", labelstudio_token="secret-token-1")
    data = tmp_path / "data"
    data.mkdir()
    env = server.server_env(settings, data, "u@x.org", "pw")
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "ws" / "media").resolve())
    assert (env["LATEST_VERSION_CHECK"], env["COLLECT_ANALYTICS"], env["SENTRY_DSN"]) == ("false", "false", "")
    assert "PORT" not in env and env["LABEL_STUDIO_USER_TOKEN"] == "secret-token-1"
    assert server.server_env(settings, data, "u@x.org", "pw")["SECRET_KEY"] == env["SECRET_KEY"]  # stable
    # push's bulk pre-annotations: Label Studio's batched import/predictions, by a flag it still knows
    flag = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
    assert env[flag] == "true"
    import glob
    import json

    known = glob.glob(str(server.venv_dir() / "lib" / "python3*" / "site-packages" / "label_studio" / "feature_flags.json"))
    # the state-machine flags: set to the value Label Studio's own file gives them (off), read first
    fsm = ("fflag_feat_fit_568_finite_state_management", "fflag_feat_fit_710_fsm_state_fields")
    assert [env[f] for f in fsm] == ["false", "false"]
    if known:
        flags = json.loads(open(known[0]).read())["flags"]
        assert flag in flags
        assert [flags[f]["on"] for f in fsm] == [False, False]  # off there too: same behaviour, cheaper


def test_server_refuses_public_bind_and_missing_token(tmp_path):
    with pytest.raises(ValidationError, match="CURATOR_LABELSTUDIO_TOKEN"):
        server.start(Settings(workspace=tmp_path), install=False)
    with pytest.raises(ValidationError, match="127.0.0.1 only"):
        server.start(Settings(workspace=tmp_path, labelstudio_url="http://0.0.0.0:8080",
                              labelstudio_token="abcdefgh"), install=False)
    assert server.stop(Settings(workspace=tmp_path), echo=lambda _m: None) is False


def test_commands_load_without_the_sdk():
    code = ("import sys, curator.cli.labelstudio, curator.integrations.labelstudio.server; "
            "print('label_studio_sdk' in sys.modules or 'sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
