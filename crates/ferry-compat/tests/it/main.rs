mod corpus;
mod shadow;
