mod corpus;
mod old_queries;
mod shadow;
