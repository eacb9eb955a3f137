"""UI routes for agents."""

urlpatterns = []
