# MCP Guard container image: Node 22 LTS, built in one stage, run as a non-root user in another.
FROM node:22-bookworm-slim AS build
WORKDIR /app
# argon2 and other native addons compile at install time.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
# The example config (mcp-guard.toml, copied below as the default config) starts two reference
# servers with `npx --no-install`, which finds them only in node_modules. They are devDependencies
# of the project, so they become dependencies of the image before the devDependencies are pruned.
# test/examples/dockerfile.test.ts checks that every package and path that config starts is here.
ARG EXAMPLE_SERVERS="@modelcontextprotocol/server-everything @modelcontextprotocol/server-filesystem"
RUN npm ci --no-audit --no-fund && npm run build \
 && node -e "const fs = require('node:fs'); const p = JSON.parse(fs.readFileSync('package.json', 'utf8')); for (const name of process.argv.slice(1)) { p.dependencies[name] = p.devDependencies[name]; delete p.devDependencies[name]; } fs.writeFileSync('package.json', JSON.stringify(p, null, 2));" $EXAMPLE_SERVERS \
 && npm prune --omit=dev --no-audit --no-fund

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The build stage's package.json: the example servers among its dependencies, as node_modules has them.
COPY --from=build /app/package.json ./
COPY examples ./examples
# The example config runs as it is; mount your own at /config/mcp-guard.toml in its place.
COPY mcp-guard.toml /config/mcp-guard.toml
USER node
EXPOSE 3000
# The config is /config/mcp-guard.toml (listen on 0.0.0.0 inside the container).
ENV MCP_GUARD_CONFIG=/config/mcp-guard.toml
ENTRYPOINT ["node", "dist/main.js"]
CMD ["serve", "--host", "0.0.0.0"]
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:3000/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
