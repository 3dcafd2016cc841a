"""``GET /api/data_issues``: the likely label errors of the project's data, for the web page's
Models view to review (photo, given label, suggested label, self-confidence), most doubtful
first. Read from the data_issues stage's ``label_issues.csv`` only
(:func:`petsml.data_issues.grid.label_issue_grid`); an empty list before the stage ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petsml.errors import PetsError

DEFAULT_LIMIT = 48  # a screenful of thumbnails
MAX_LIMIT = 1000


def install_data_issues_routes(app: Any, root: str | Path) -> None:
    from fastapi.responses import JSONResponse

    from petsml.data_issues.grid import label_issue_grid

    @app.get("/api/data_issues")
    def data_issues(limit: int = DEFAULT_LIMIT) -> JSONResponse:
        if not 1 <= limit <= MAX_LIMIT:
            return JSONResponse({"error": f"limit must be between 1 and {MAX_LIMIT}"},
                                status_code=400)  # fmt: skip
        try:
            cells = label_issue_grid(root, limit)
        except PetsError as error:
            return JSONResponse({"error": str(error)}, status_code=500)
        for cell in cells:
            cell["thumb"] = f"/api/photo/{cell['image_id']}"
        return JSONResponse({"label_issues": cells})
