"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, with
no browser or driver download: open a page, click, run a line of JavaScript, read the text,
take a screenshot.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PAGE_TIMEOUT_S = 60


class Browser:
    def __init__(self) -> None:
        if CHROMIUM is None or CHROMEDRIVER is None:
            raise RuntimeError("chromium and chromium-driver are not installed")
        options = webdriver.ChromeOptions()
        # Debian's browser and driver: Selenium Manager downloads nothing when both are given.
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=900,900",
        ):
            options.add_argument(argument)
        self._driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self._driver.set_page_load_timeout(PAGE_TIMEOUT_S)

    def open(self, url: str) -> None:
        self._driver.get(url)

    def click(self, selector: str) -> None:
        """Click the element and wait for the page its form submits to."""
        element = self._driver.find_element(By.CSS_SELECTOR, selector)
        element.click()
        WebDriverWait(self._driver, PAGE_TIMEOUT_S).until(expected_conditions.staleness_of(element))
        WebDriverWait(self._driver, PAGE_TIMEOUT_S).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )

    def evaluate(self, expression: str) -> Any:
        return self._driver.execute_script(f"return ({expression});")

    def text(self) -> str:
        return str(self._driver.find_element(By.TAG_NAME, "body").text)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self._driver.save_screenshot(str(path)):
            raise RuntimeError(f"no screenshot written to {path}")

    def close(self) -> None:
        self._driver.quit()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
