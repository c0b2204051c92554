"""Loads Lore's chat page in headless Chromium (Debian's chromium and chromedriver, driven
by Selenium), asks a question with the keyboard alone, watches the answer stream in and
its sources appear, opens the first source's passage (its evidence sentence marked), and
saves a screenshot of each. Prints what the page showed as JSON (the Rust test asserts on
it). Arguments: the page's URL, the question, the screenshot's path.
"""
import json
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from phone import open_browser
from phone import texts as texts_in

url, question, screenshot = sys.argv[1:]
# "How do bees find the flowers?"
HEBREW = "איך דבורים מוצאות את הפרחים?"
driver = open_browser()


def texts(selector):
    return texts_in(driver, selector)


try:
    driver.get(url)
    deadline = time.time() + 30
    while not texts("#bot option") and time.time() < deadline:
        time.sleep(0.05)
    # Keyboard only: the question box has the focus when the page opens.
    driver.switch_to.active_element.send_keys(question, Keys.ENTER)
    growth = []
    deadline = time.time() + 240
    while not texts(".sources li") and not texts(".error") and time.time() < deadline:
        answer = texts(".answer")
        if answer and answer[-1] and (not growth or growth[-1] != len(answer[-1])):
            growth.append(len(answer[-1]))
        time.sleep(0.02)
    # The answer is done when the button comes back.
    deadline = time.time() + 30
    while not driver.find_element(By.ID, "send").is_enabled() and time.time() < deadline:
        time.sleep(0.05)
    seen = {
        "bots": texts("#bot option"),
        "questions": texts(".question"),
        "answer": (texts(".answer") or [""])[-1],
        "answer_lengths_while_streaming": growth,
        "sources": texts(".sources li"),
        "errors": texts(".error"),
        "focus_back_in_question": driver.switch_to.active_element.get_attribute("id") == "question",
        "fits_the_width": driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ),
    }
    driver.save_screenshot(screenshot)
    # The source opens the passage that was used, the quoted sentence marked.
    links = driver.find_elements(By.CSS_SELECTOR, ".sources li a")
    if links:
        links[0].click()
        deadline = time.time() + 30
        while not driver.find_elements(By.CSS_SELECTOR, "#passage[open]") and time.time() < deadline:
            time.sleep(0.05)
        seen["passage_title"] = (texts("#passage-title") or [""])[0]
        seen["passage_text"] = (texts("#passage-text") or [""])[0]
        seen["passage_marked"] = texts("#passage-text mark")
        seen["evidence_shown"] = seen["answer"].split("Evidence")[-1] if "Evidence" in seen["answer"] else ""
        driver.save_screenshot(screenshot.replace(".png", "-passage.png"))
        driver.find_element(By.CSS_SELECTOR, "#passage form button").click()
    # A right-to-left question: its own direction, whatever the answer's.
    driver.find_element(By.ID, "question").send_keys(HEBREW, Keys.ENTER)
    deadline = time.time() + 240
    while len(texts(".answer")) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    while not driver.find_element(By.ID, "send").is_enabled() and time.time() < deadline:
        time.sleep(0.05)
    direction = "return [...document.querySelectorAll(arguments[0])].map(e => [e.getAttribute('dir'), e.matches(':dir(rtl)') ? 'rtl' : 'ltr', e.textContent])"
    seen["directions"] = {
        "question_box": driver.find_element(By.ID, "question").get_attribute("dir"),
        "questions": driver.execute_script(direction, ".question"),
        "answers": driver.execute_script(direction, ".answer"),
        "sources": driver.execute_script(direction, ".sources li"),
    }
    driver.save_screenshot(screenshot.replace(".png", "-rtl.png"))
finally:
    driver.quit()
print(json.dumps(seen))
