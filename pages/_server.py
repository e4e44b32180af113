"""Start the Streamlit server with the legacy ``pages/`` auto-discovery switched off.

Streamlit treats an app with a ``pages/`` folder as a version-1 multipage app until the
first ``st.navigation`` call: that first run lists every file in the folder and could open
a page directly, around streamlit_app.py's sign-in gate. We route only through
``st.navigation``, so the flag is switched off before any session starts. AppTest-based
tests apply the same switch.

Usage: ``python -m pages._server run streamlit_app.py [streamlit options]``
"""

from __future__ import annotations

from streamlit.runtime.pages_manager import PagesManager


def route_only_through_navigation() -> None:
    if getattr(PagesManager.__init__, "_meterbook", False):
        return
    original = PagesManager.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    __init__._meterbook = True
    PagesManager.__init__ = __init__


if __name__ == "__main__":
    from streamlit.web.cli import main

    route_only_through_navigation()
    main(prog_name="streamlit")
