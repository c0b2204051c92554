"""Closes the loop in headless Chromium (Debian's chromium and chromedriver, driven by
Selenium), at phone width: asks a question on Lore's chat page, votes 👎 on the answer
and says why, opens the quality page and reads the counts and the review queue, saves a
correction from the queue, reloads, and saves a screenshot of the quality page. Prints
what the pages showed as JSON (the Rust test asserts on it). Arguments: the daemon's base
URL, the question, the screenshot's path.
"""
import json
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from phone import open_browser
from phone import texts as texts_in

base, question, screenshot = sys.argv[1:]
driver = open_browser()


def texts(selector):
    return texts_in(driver, selector)


def wait(what, done, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


seen = {}
try:
    driver.get(base + "/")
    wait("the bots are listed", lambda: texts("#bot option"), 30)
    driver.switch_to.active_element.send_keys(question, Keys.ENTER)
    wait("the answer's vote buttons", lambda: driver.find_elements(By.CSS_SELECTOR, ".votes .vote-down"))
    seen["answer"] = texts(".answer")[-1]
    driver.find_element(By.CSS_SELECTOR, ".votes .vote-down").click()
    wait("the reason box", lambda: driver.find_elements(By.CSS_SELECTOR, ".votes form input"), 30)
    seen["after_vote"] = texts(".votes [role=status]")[-1]
    reason = driver.find_element(By.CSS_SELECTOR, ".votes form input")
    reason.send_keys("It does not say where to park", Keys.ENTER)
    wait("the reason is sent", lambda: "noted" in texts(".votes [role=status]")[-1], 30)
    seen["after_reason"] = texts(".votes [role=status]")[-1]
    seen["pressed"] = driver.find_element(By.CSS_SELECTOR, ".votes .vote-down").get_attribute("aria-pressed")

    driver.get(base + "/quality")
    wait("the figures", lambda: texts(".place .totals") and texts(".review b"), 60)
    seen["totals"] = texts(".place .totals")
    seen["charts"] = len(driver.find_elements(By.CSS_SELECTOR, ".place svg.chart rect"))
    seen["gaps"] = texts(".gap")
    seen["review_questions"] = texts(".review b")
    seen["review_comments"] = texts(".review .comments")
    seen["fits_the_width"] = driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    form = driver.find_element(By.CSS_SELECTOR, ".review form")
    form.find_element(By.CSS_SELECTOR, "textarea").send_keys("Behind the town hall")
    form.find_element(By.CSS_SELECTOR, "input[name=source]").send_keys("parking.md")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait("the correction is saved", lambda: texts(".review .saved"), 30)
    seen["saved"] = texts(".review .saved")
    driver.save_screenshot(screenshot.replace(".png", "-review.png"))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(screenshot)
    driver.refresh()
    wait("the page again", lambda: texts(".place .totals"), 60)
    seen["review_after"] = texts("#review")
finally:
    driver.quit()
print(json.dumps(seen))
