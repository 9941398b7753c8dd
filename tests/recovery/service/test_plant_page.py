"""The plant page in a real headless Chromium: each token sees the report its API
answers give it, drawn by the page, and a partner nothing of the other's factories."""

import pytest

from .conftest import auth
from .test_browser import ARTIFACTS, _wait, browser  # noqa: F401  (the module's Chromium fixture)

pytestmark = pytest.mark.filterwarnings("ignore")


def _open_plant(drv, url, token):
    from selenium.webdriver.common.by import By

    drv.get(url + "/plant")
    drv.execute_script("sessionStorage.clear()")
    drv.get(url + "/plant")
    box = drv.find_element(By.ID, "token")
    box.send_keys(token)
    drv.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, "#track tbody tr")
          and d.find_elements(By.CSS_SELECTOR, "#drift svg g.row"))


@pytest.mark.parametrize("who", ["admin", "eng_b"])
def test_plant_page_draws_the_callers_report(browser, live, client, tokens, who):  # noqa: F811
    from selenium.webdriver.common.by import By

    _open_plant(browser, live.url, tokens[who])
    browser.save_screenshot(str(ARTIFACTS / f"plant-{who}.png"))
    health = client.get("/api/reports/health", headers=auth(tokens[who])).json()
    track = client.get("/api/reports/track-record", headers=auth(tokens[who])).json()
    drawn = [g.get_attribute("data-key") for g in browser.find_elements(By.CSS_SELECTOR, "#drift svg g.row")]
    assert drawn == [f"{f['factory']}/{f['characteristic']}" for f in health["factories"]]
    if who == "eng_b":
        assert {k.split("/")[0] for k in drawn} == {"FB1"}
    faults = [g.get_attribute("data-key") for g in browser.find_elements(By.CSS_SELECTOR, "#faults svg g.row")]
    assert faults == [f["fault"] for f in health["faults"]]
    # every interval is drawn as a line with a point, inside the chart
    assert len(browser.find_elements(By.CSS_SELECTOR, "#drift svg line.interval")) == len(drawn)
    rows = {r.get_attribute("data-key"): r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#track tbody tr")}
    assert rows["recommendations"] == str(track["n_recommendations"])
    assert rows["decisions"] == str(track["n_decisions"])
    assert browser.find_element(By.ID, "message").text == ""
