"""Reason phrases for the status lines lbd writes itself: IANA's registry (RFC 9110 section 15), plus the
codes ALB uses that are not in it (AWS: "Troubleshoot your Application Load Balancers", HTTP 460-561).

Pure, and shared by the routing actions (redirects, fixed responses) and lbd's own error pages.
"""

from __future__ import annotations

from http import HTTPStatus

# Codes ALB uses that are not in the IANA registry.
ELB_PHRASES = {460: "Client Closed Request", 463: "Bad Request", 464: "Bad Request", 561: "Unauthorized"}


def phrase(status: int) -> str:
    if status in ELB_PHRASES:
        return ELB_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
