"""UI routes for approvals."""

urlpatterns = []
