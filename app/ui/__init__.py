"""sparq's Streamlit web app: employees ask, admins ingest, everyone sees what each answer cost.

Entry file: `app/ui/main.py` (started by `sparq ui`). Page logic lives in `app.ui.views` as plain functions
so tests can run each page on its own with Streamlit's AppTest.
"""
