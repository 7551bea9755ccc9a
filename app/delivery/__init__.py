"""Writing HTTP responses: one response that follows a generation's feed, to the browser.

What to write next is decided once; two drivers move the bytes: the WSGI body gunicorn iterates,
and the writer that runs in the event loop on a connection taken over from gunicorn.
"""
