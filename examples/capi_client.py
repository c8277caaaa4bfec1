"""A client that uses only the C-API-like handle layer (mivl.edge.capi), as a C program would.

Usage: python examples/capi_client.py BUNDLE IMAGE "QUESTION"
"""
import sys

from mivl.edge.capi import (MIVL_OK, Out, mivl_last_error_message, mivl_request_add_image,
                            mivl_request_create, mivl_request_destroy, mivl_request_generate_next,
                            mivl_request_get_text, mivl_request_get_timing, mivl_request_set_option,
                            mivl_request_set_question, mivl_session_create, mivl_session_destroy,
                            mivl_status_name)


def check(status: int, what: str) -> None:
    if status != MIVL_OK:
        print(f"{what}: {mivl_status_name(status)}: {mivl_last_error_message()}", file=sys.stderr)
        sys.exit(1)


def main(bundle: str, image: str, question: str) -> None:
    session, request, token, text, timings = Out(), Out(), Out(), Out(), Out()
    check(mivl_session_create(bundle.encode(), 0, session), "session_create")
    try:
        check(mivl_request_create(session.value, request), "request_create")
        check(mivl_request_add_image(request.value, image.encode()), "add_image")
        check(mivl_request_set_question(request.value, question.encode()), "set_question")
        check(mivl_request_set_option(request.value, b"max_new_tokens", 64), "set_option")
        printed = 0
        while (status := mivl_request_generate_next(request.value, token)) == MIVL_OK:
            mivl_request_get_text(request.value, text)
            print(text.value[printed:], end="", flush=True)   # stream the new text
            printed = len(text.value)
        if status < 0:
            check(status, "generate_next")
        mivl_request_get_text(request.value, text)
        print(text.value[printed:])
        check(mivl_request_get_timing(request.value, b"decode_tokens_per_s", timings), "get_timing")
        print(f"[{timings.value:.1f} tok/s]", file=sys.stderr)
    finally:
        mivl_request_destroy(request.value)
        mivl_session_destroy(session.value)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
