"""Writing HTTP responses: one response that follows a generation's feed, to the browser.

What to write next is decided once (`cursor.Cursor`); two drivers move the bytes: the WSGI body
gunicorn iterates (`wsgi_body.WsgiBody`), and the writer that runs in the event loop on a
connection taken over from gunicorn (`loop_writer.LoopWriter`, by way of `takeover`).
"""
