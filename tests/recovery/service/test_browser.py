"""The engineers' web page in a real headless Chromium, against a live server.

Chromium and its driver come from the system (``scripts/test-deps.sh`` installs
them on Debian/Ubuntu). A screenshot of each page state lands in
``test-artifacts/`` for a human to look at when a run fails.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import auth

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


def _chrome_paths():
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if Path(p).exists()), None)
    if browser is None or driver is None:
        pytest.fail("Chromium and chromedriver are needed for the browser tests: run scripts/test-deps.sh "
                    "(Debian/Ubuntu) or install them yourself")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chrome_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,2200"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(60)
    ARTIFACTS.mkdir(exist_ok=True)
    yield drv
    drv.quit()


def _wait(drv, cond, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(cond)


def _fresh_page(drv, url):
    """The page with no token remembered from an earlier test."""
    drv.get(url + "/")
    drv.execute_script("sessionStorage.clear()")
    drv.get(url + "/")


def _sign_in(drv, url, token):
    from selenium.webdriver.common.by import By

    _fresh_page(drv, url)
    box = drv.find_element(By.ID, "token")
    box.clear()
    box.send_keys(token)
    drv.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, "#batches tbody tr"))


def _text(drv, id_):
    from selenium.webdriver.common.by import By

    return drv.find_element(By.ID, id_).text


def test_engineer_reviews_a_batch_and_accepts_the_plan(browser, live, tokens, app, client):
    from selenium.webdriver.common.by import By

    svc = app.state.service
    _sign_in(browser, live.url, tokens["eng_a"])
    rows = {r.get_attribute("data-batch"): r for r in browser.find_elements(By.CSS_SELECTOR, "#batches tbody tr")}
    # the list is the partner's view: the same batches as the API gives this token
    api = client.get("/api/batches", headers=auth(tokens["eng_a"])).json()
    assert set(rows) == {b["batch_id"] for b in api}
    assert "model" in _text(browser, "model")

    rows["B-1"].click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#plan tbody tr")
          and d.find_elements(By.CSS_SELECTOR, "svg.chart"))
    browser.save_screenshot(str(ARTIFACTS / "batch-B-1.png"))
    rec = client.get("/api/batches/B-1/recommendation", headers=auth(tokens["eng_a"])).json()["recommendation"]
    # the page shows the service's answer: decision, probability and every planned lever
    assert rec["decision"].upper() in _text(browser, "decision-headline")
    shown = [r.find_elements(By.TAG_NAME, "td")[1].text for r in browser.find_elements(By.CSS_SELECTOR, "#plan tbody tr")]
    assert shown == [x["lever"] for x in rec["plan"]]
    _check_readable(browser, rec, svc.process)
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert {c.get_attribute("data-characteristic") for c in charts} >= {"diameter"}
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart circle.reading")      # measured bars drawn
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.band")           # tolerance bands drawn
    assert _text(browser, "root-cause")                                             # causal path in words
    # the value axis rises and spans every final band (labels are the numbers, not truncated)
    p = svc.process
    lo, hi = p.final_bands()
    for c in charts:
        name = c.get_attribute("data-characteristic")
        labels = c.find_elements(By.CSS_SELECTOR, "text.tick-y")
        ticks = [float(t.text) for t in sorted(labels, key=lambda t: -float(t.get_attribute("y")))]
        assert len(ticks) == 3 and ticks[0] < ticks[1] < ticks[2], (name, ticks)     # bottom to top
        i = p.char_index[name]
        tol = 1e-3 * max(abs(lo[i]), abs(hi[i]), 1e-9)     # labels carry 4 significant digits
        if np.isfinite(lo[i]):
            assert min(ticks) <= lo[i] + tol, (name, ticks)
        if np.isfinite(hi[i]):
            assert max(ticks) >= hi[i] - tol, (name, ticks)

    # B-1 has a final decision after this step (made here, or by the API tests before):
    # the page says so and replaces it only when the engineer decides again
    first = client.post("/api/batches/B-1/decision", headers=auth(tokens["eng_a"]),
                        json={"decision": "reject", "comment": "decided before the page"})
    assert first.status_code in (201, 409)
    current = first.json().get("decision_id", first.json().get("current_decision_id"))
    before = len(svc.store.decisions())
    browser.find_element(By.ID, "comment").send_keys("browser test: plan accepted")
    browser.find_element(By.ID, "accept").click()
    _wait(browser, lambda d: _text(d, "decision-message").startswith("409"))
    assert f"decision {current}" in _text(browser, "decision-message")
    assert len(svc.store.decisions()) == before
    browser.find_element(By.ID, "accept").click()
    _wait(browser, lambda d: "Decision recorded" in _text(d, "decision-message"))
    assert f"replacing decision {current}" in _text(browser, "decision-message")
    browser.save_screenshot(str(ARTIFACTS / "batch-B-1-accepted.png"))
    dec = svc.store.decisions()
    assert len(dec) == before + 1
    last = dec.iloc[-1]
    assert last["batch_id"] == "B-1" and last["decision"] == "accept"
    assert last["comment"] == "browser test: plan accepted"
    trail = svc.store.audit(batch_ids=["B-1"])
    assert (trail["action"] == "decision").any() and (trail["action"] == "recommendation_shown").any()
    sup = trail[trail["action"] == "decision_superseded"].iloc[-1]["payload"]
    assert sup["decision_id"] == current and sup["superseded_by"] == int(last["id"])


def _shown_percent(text: str) -> tuple[float, float]:
    """The range of probabilities (0-1) a percentage on the page stands for."""
    import re

    if text == "< 0.1%":
        return 0.0, 0.001
    if text == "> 99%":
        return 0.995, 1.0
    m = re.fullmatch(r"(\d+(?:\.\d)?)%", text)
    assert m, f"not a percentage: {text!r}"
    x, half = float(m.group(1)), (0.05 if "." in m.group(1) else 0.5)
    return (x - half) / 100.0, (x + half) / 100.0


def _check_readable(drv, rec, process):
    """Issue 20's batch page: the decision and its P(accept) first and prominent,
    the root cause in one sentence before the details, percentages (never 1.2e-17),
    plan values at the lever's resolution."""
    import re

    from selenium.webdriver.common.by import By

    head, proba = drv.find_element(By.ID, "decision-headline"), drv.find_element(By.ID, "p-accept")
    sentence, details = drv.find_element(By.ID, "root-cause-sentence"), drv.find_element(By.ID, "root-cause")
    plan = drv.find_element(By.ID, "plan")
    # order on the page, top to bottom: decision, P(accept), the sentence, the root-cause list, the plan
    ys = [e.location["y"] for e in (head, proba, sentence, details, plan)]
    assert ys == sorted(ys) and len(set(ys)) == len(ys), ys
    body_px = float(drv.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)"))
    for e in (head, proba):
        assert float(e.value_of_css_property("font-size").removesuffix("px")) > body_px
    assert head.value_of_css_property("font-weight") in ("700", "bold")
    # P(accept) as a percentage that stands for the service's number
    m = re.search(r"P\(accept\) with the plan: (\S+%|< 0\.1%|> 99%)", proba.text)
    assert m, proba.text
    lo, hi = _shown_percent(m.group(1))
    assert lo - 1e-9 <= rec["p_accept"]["mean"] <= hi + 1e-9
    # one plain sentence naming the most likely cause and its share
    top = rec["root_cause"][0]
    text = sentence.text
    assert text.startswith("Most likely cause (") and text.endswith(".") and "\n" not in text
    assert top["cause"].replace("_", " ") in text and "e-" not in text
    items = details.find_elements(By.TAG_NAME, "li")
    assert len(items) == min(3, len(rec["root_cause"]))
    for li, c in zip(items, rec["root_cause"]):
        shown, _, path = li.text.partition(": ")
        lo, hi = _shown_percent(shown)
        assert lo - 1e-9 <= c["probability"] <= hi + 1e-9, (shown, c["probability"])
        assert (shown == "< 0.1%") == (c["probability"] < 0.001)
        assert path == c["path"]
    # plan values at the lever's resolution: integer levers as integers, others to a few decimals
    levers = {lv.name: lv for lv in process.levers}
    for box, row in zip(drv.find_elements(By.CSS_SELECTOR, "input.plan-value"), rec["plan"]):
        lv, shown = levers[row["lever"]], box.get_attribute("value")
        if lv.integer:
            assert re.fullmatch(r"-?\d+", shown), shown
        else:
            assert re.fullmatch(r"-?\d+(\.\d{1,2})?", shown), shown       # 0.1 or 0.01 of the unit
        # rounding moves a value by at most half a step: 0.5 for an integer, 0.5% of the range of change else
        assert abs(float(shown) - row["value"]) <= (0.5 if lv.integer else 0.005 * lv.max_change) + 1e-9


def test_out_of_bounds_edit_is_refused_on_the_page(browser, live, tokens, app):
    from selenium.webdriver.common.by import By

    svc = app.state.service
    _sign_in(browser, live.url, tokens["eng_a"])
    browser.find_element(By.CSS_SELECTOR, "#batches tbody tr[data-batch='B-1']").click()   # recoverable: it has a plan
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input.plan-value"))
    box = browser.find_elements(By.CSS_SELECTOR, "input.plan-value")[0]
    lever = box.get_attribute("data-lever")
    box.clear()
    box.send_keys("1e9")
    before = len(svc.store.decisions())
    browser.find_element(By.ID, "modify").click()
    _wait(browser, lambda d: _text(d, "decision-message"))
    msg = _text(browser, "decision-message")
    browser.save_screenshot(str(ARTIFACTS / "batch-B-1-refused.png"))
    assert msg.startswith("422") and lever in msg and "Decision recorded" not in msg
    assert len(svc.store.decisions()) == before                                     # nothing recorded


def test_other_partner_does_not_see_the_batch(browser, live, tokens, client):
    from selenium.webdriver.common.by import By

    _sign_in(browser, live.url, tokens["eng_b"])
    listed = {r.get_attribute("data-batch") for r in browser.find_elements(By.CSS_SELECTOR, "#batches tbody tr")}
    assert listed == {b["batch_id"] for b in client.get("/api/batches", headers=auth(tokens["eng_b"])).json()}
    assert "B-1" not in listed             # B-1 only has partner A's steps so far


def test_wrong_token_is_told_so(browser, live):
    from selenium.webdriver.common.by import By

    _fresh_page(browser, live.url)
    browser.find_element(By.ID, "token").send_keys("rcv_not_a_token")
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait(browser, lambda d: "401" in _text(d, "list-message"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#batches tbody tr")
