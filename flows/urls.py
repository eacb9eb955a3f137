"""UI routes for flows."""

urlpatterns = []
