# One image for both roles; the role is the command:
#   docker run fraktal:latest master --size 7680x4320 ...
#   docker run fraktal:latest worker --master HOST:65433
# The token comes from the environment (FRAKTAL_TOKEN), never from the image.

# The build stage turns the repository into a wheel, so the runtime image
# carries the installed package but not the source tree or build tools.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/home/fraktal/.cache/numba

# uid 1000 is the first user on most Linux desktops, so files the master
# writes to a bind mount belong to the person who cloned the repository.
RUN useradd --create-home --uid 1000 --user-group fraktal \
    && install -d -o fraktal -g fraktal /data

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels

# Compile the kernel once, as the user that runs it (fraktal, uid 1000), into
# a cache that user owns: each pool process of each worker then loads it
# instead of compiling it again. Numba keys the cache on the CPU, so a host
# whose CPU differs from the build host's compiles once more at first use.
USER 1000:1000
RUN python -c "from fraktal.render.compute import warm_up; warm_up()"

WORKDIR /data
# 65433: workers connect to the master; 5001: the master's dashboard.
EXPOSE 65433 5001

# A master is healthy when it answers on its worker port, a worker when it is
# connected to a master (see fraktal.health).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-m", "fraktal.health"]

ENTRYPOINT ["fraktal"]
CMD ["worker"]
