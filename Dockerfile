# MCP Guard container image: Node 22 LTS, built in one stage, run as a non-root user in another.
FROM node:22-bookworm-slim AS build
WORKDIR /app
# argon2 and other native addons compile at install time.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
RUN npm ci --no-audit --no-fund && npm run build && npm prune --omit=dev

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY examples ./examples
USER node
EXPOSE 3000
# Mount a config at /config/mcp-guard.toml (listen on 0.0.0.0 inside the container).
ENV MCP_GUARD_CONFIG=/config/mcp-guard.toml
ENTRYPOINT ["node", "dist/main.js"]
CMD ["serve", "--host", "0.0.0.0"]
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:3000/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
