"""The kiosk UI: a small web server on 127.0.0.1 and the page Chromium shows in kiosk mode."""
