"""The API's one pagination (``DEFAULT_PAGINATION_CLASS``): its own module, since the
settings import it while DRF's generic views are being defined."""

from rest_framework.pagination import CursorPagination


class ProjectCursorPagination(CursorPagination):
    """Cursor pages of 50 (``?page_size=`` up to 200); the order is the view's ``ordering``
    (or ``?ordering=``), whose first field should be unique so pages stay stable while
    rows are added."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = "pk"
