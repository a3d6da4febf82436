"""`vtl-chat --web`: the timeline drawing and span reading as pure functions, then the page in headless Chromium.

The browser test runs the real page (eval.web), the real model loading and extraction (open_session on a tiny random
checkpoint and a generated video, tiny-random CLIP) and the real parsing and drawing; only the answer is scripted
(a ChatSession subclass that generates with the model, then replaces the text), so that it names spans for sure.
"""
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from eval.web_timeline import Span, answer_spans, timeline_html

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
DENSE = "From 10 to 40, a bright square moves right. From 50 to 90, it leaves the frame."


def test_answer_spans_grounding_names_every_span():
    spans = answer_spans("The square moves from 10 to 40 and again from 60 to 20.", 40.0)
    assert spans == [Span(4.0, 16.0, "10 to 40"), Span(24.0, 8.0, "60 to 20")]  # rule G2, reversed kept
    assert answer_spans("A man walks.", 40.0) == []


def test_answer_spans_dense_uses_the_events_rule():
    spans = answer_spans(DENSE, 4.0)  # rule D5: (s/100·D, (e+1)/100·D)
    assert [s.label for s in spans] == ["a bright square moves right.", "it leaves the frame."]
    assert [(round(s.start, 3), round(s.end, 3)) for s in spans] == [(0.4, 1.64), (2.0, 3.64)]
    # a grounding answer that merely starts with "from" has no captions: grounding rule, no +1
    assert answer_spans("From 10 to 40.", 4.0) == [Span(0.4, 1.6, "10 to 40")]


def test_timeline_html_rows_positions_and_escaping():
    out = timeline_html([Span(10.0, 20.0, "a <b> & c"), Span(30.0, 50.0, "past the end")], 40.0)
    assert out.count('class="vtl-span"') == 2 and 'data-start="10.000" data-end="20.000"' in out
    assert 'x="250.0" y="50" width="250.0"' in out  # 10–20 s of 40 s on a 1000-unit width, second row clamped:
    assert 'x="750.0" y="86" width="250.0"' in out
    assert "a &lt;b&gt; &amp; c (10.0–20.0 s)" in out and "<b>" not in out
    assert 'viewBox="0 0 1000 102"' in out  # axis 30 + 2 rows of 36
    assert ">0.0 s<" in out and ">40.0 s<" in out


def test_timeline_html_reversed_and_empty():
    out = timeline_html([Span(24.0, 8.0, "60 to 20")], 40.0)
    assert 'class="vtl-span vtl-reversed"' in out and 'x="200.0"' in out and "stroke-dasharray" in out
    assert "No time span" in timeline_html([], 40.0)
    with pytest.raises(ValueError):
        timeline_html([], 0.0)


def test_chat_config_web_options(tmp_path):
    from eval.config import ChatConfig

    video, ckpt = tmp_path / "v.mp4", tmp_path / "ckpt"
    video.write_bytes(b"x")
    ckpt.mkdir()
    cfg = ChatConfig(video=video, checkpoint=ckpt, web=True)
    assert (cfg.host, cfg.port) == ("127.0.0.1", 7860)
    with pytest.raises(ValueError, match="exclusive"):
        ChatConfig(video=video, checkpoint=ckpt, web=True, question="when?")
    with pytest.raises(ValueError, match="port"):
        ChatConfig(video=video, checkpoint=ckpt, web=True, port=70000)


# --- the page in a browser ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(user_data: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={user_data}"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))  # both paths given: no download


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                    reason="no /usr/bin/chromium + /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
def test_page_answers_and_draws_the_spans(tmp_path):
    pytest.importorskip("gradio", reason="the [web] extra (gradio) is not installed")
    pytest.importorskip("selenium", reason="selenium is not installed")
    import torch
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from support.evaluation import tiny_checkpoint

    from eval.chat import ChatSession, open_session, video_features
    from eval.config import ChatConfig
    from eval.web import launch
    from pipeline.synth.media import write_video

    class ScriptedSession(ChatSession):
        def ask(self, question: str) -> str:
            super().ask(question)  # the model really answers; its random text is then replaced
            self.turns[-1] = {"from": "gpt", "value": DENSE}
            return DENSE

    torch.set_num_threads(1)
    frames = np.zeros((40, 48, 64, 3), dtype=np.uint8)
    for i in range(40):  # a bright square moving left to right
        frames[i, 16:32, i:i + 16] = 255
    video = write_video(tmp_path / "clip.mp4", frames, fps=10.0)
    cfg = ChatConfig(video=video, checkpoint=tiny_checkpoint(tmp_path / "ckpt"), clip_model="tiny-random",
                     max_new_tokens=4, device="cpu", web=True, port=_free_port())
    session = open_session(cfg)
    shots = Path(os.environ.get("VTL_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    demo = launch(cfg, ScriptedSession(session.model, session.features, session.duration, cfg.max_new_tokens),
                  lambda path: video_features(path, cfg, "cpu"), block=False)
    driver = _chromium(tmp_path / "chromium-profile")
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{cfg.port}/")
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#vtl-question textarea"))
        assert "clip.mp4" in driver.find_element(By.ID, "vtl-status").text and "4.0 s" in driver.page_source
        box.send_keys("Could you describe the events in the video in detail?")
        driver.find_element(By.ID, "vtl-ask").click()
        spans = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vtl-timeline g.vtl-span") or False)
        assert [s.get_attribute("data-start") for s in spans] == ["0.400", "2.000"]
        assert [s.get_attribute("data-end") for s in spans] == ["1.640", "3.640"]
        chat = driver.find_element(By.ID, "vtl-chatbot").text
        assert "a bright square moves right" in chat and "(0.4–1.6 s)" in chat  # render(): seconds of the video
        assert re.search(r"it leaves the frame\. \(2\.0.3\.6 s\)", driver.find_element(By.ID, "vtl-timeline").text)
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", spans[1])
        seek = "return document.querySelector('#vtl-video video').currentTime"
        wait.until(lambda d: abs(d.execute_script(seek) - 2.0) < 1e-6)
        driver.save_screenshot(str(shots / "chat-web.png"))
        # an uploaded video gets its own features (same CLIP) and a fresh conversation
        other = write_video(tmp_path / "other.mp4", np.repeat(frames, 2, axis=0)[:60], fps=10.0)
        clear = driver.find_elements(By.CSS_SELECTOR, "#vtl-video button[aria-label='Clear']")
        if clear:
            clear[0].click()
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#vtl-video input[type=file]"))
        upload.send_keys(str(other))
        wait.until(lambda d: "other.mp4" in d.find_element(By.ID, "vtl-status").text)
        assert "6.0 s" in driver.find_element(By.ID, "vtl-status").text
        assert not driver.find_elements(By.CSS_SELECTOR, "#vtl-timeline g.vtl-span")
        driver.find_element(By.ID, "vtl-given").click()  # back to the video of the command line
        wait.until(lambda d: "clip.mp4: 4.0 s" in d.find_element(By.ID, "vtl-status").text)
    finally:
        driver.quit()
        demo.close()
    assert (shots / "chat-web.png").stat().st_size > 10_000
    if os.environ.get("VTL_UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shots / "chat-web.png", ROOT / "docs" / "img" / "chat-web.png")
