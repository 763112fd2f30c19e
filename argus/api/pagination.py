"""Pagination of every list endpoint: ``{count, next, previous, results}``."""

from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """Pages of ``page_size`` (default 50, at most 200) rows."""

    page_size_query_param = "page_size"
    max_page_size = 200


class CursorPagination(pagination.CursorPagination):
    """Stable pages over an ever-growing, time-ordered list (calls, audit).

    ``count`` is left out: counting a large log on every page is what cursors avoid.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
