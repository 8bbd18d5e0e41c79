# flowwarden node agent image (the DaemonSet in daemonset/ runs it privileged, hostNetwork).
# The full image has gcc and the Python headers for agent/_hotpath.c; the runtime image needs neither.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY agent ./agent
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 0
ENTRYPOINT ["flowwarden"]
CMD ["run"]
