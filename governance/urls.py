"""UI routes for governance."""

urlpatterns = []
